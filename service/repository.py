"""The model repository (Triton's layout): ``<model_dir>/<name>/<version>/manifest.json`` beside the ONNX
files it lists, and an optional ``<model_dir>/<name>/config.json``.

Read and verified here at start: a manifest must name the model and version its folders name (no folder
can take over another model's name), every file it lists must stay inside the model's own folder and match
its sha256, and the graphs the service loads must be among them: nothing unlisted is ever loaded. The
workers check the hashes again as they load (what is checked is what is loaded) and report the providers
each version got. A version that fails is unavailable on its own; the others are served. What went wrong
is logged in full and reported without server paths.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from .errors import ModelNotFound
from .manifest import Manifest, ModelConfig, version_manifests
from .settings import Settings
from .worker.explain import methods_for
from .worker.protocol import Key, Loaded, RunPlan, Started, Version

log = logging.getLogger("service.repository")
Status = Literal["ready", "loading", "failed"]
_PATHS = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+~-]+){2,}")


def public(message: str) -> str:
    """A reason fit for a response: file system paths replaced (the log has them)."""
    return _PATHS.sub("<path>", message)


@dataclass
class ModelVersion:
    manifest: Manifest
    directory: Path
    providers: list[str] = field(default_factory=list)  # what ONNX Runtime gave the workers' sessions
    fallback: str | None = None  # providers=auto: why it runs on the CPU although CUDA was tried
    plan: RunPlan | None = None  # how the ordinary workers, which serve its batches, run it (timed as they loaded it)
    error: str | None = None     # why it cannot be served (no server paths)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def key(self) -> Key:
        return self.manifest.name, self.manifest.version

    @property
    def status(self) -> Status:
        return "failed" if self.error is not None else "ready" if self.providers else "loading"

    @cached_property
    def methods(self) -> list[str]:
        """Heatmap methods this version supports, the default first."""
        return methods_for(self.manifest.heatmaps)


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelRepository:
    settings: Settings
    models: dict[str, dict[str, ModelVersion]] = field(default_factory=dict)
    configs: dict[str, ModelConfig] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what is wrong beside the versions' own failures
    blocking: list[str] = field(default_factory=list)  # … of it, what keeps the replica from being ready at all

    def load_all(self) -> None:
        root = self.settings.model_dir
        if not root.is_dir():
            self._problem("the model directory does not exist", f"model directory {root} does not exist", blocking=True)
            return
        for manifest_path in version_manifests(root):
            self._load(manifest_path)
        if not self.models:
            self._problem("no models found in the model directory", f"no models found under {root}", blocking=True)
        for name in self.models:
            self._load_config(name, root / name / "config.json")

    def _problem(self, public_reason: str, logged: str, blocking: bool = False) -> None:
        """A problem found while reading the repository; ``blocking``: one that changes how requests are
        routed (no models at all, a model's default version unknown), so the replica must not take traffic."""
        self.problems.append(public_reason)
        if blocking:
            self.blocking.append(public_reason)
        log.error(logged)

    def _load_config(self, name: str, path: Path) -> None:
        try:
            config = ModelConfig.model_validate_json(path.read_text()) if path.exists() else ModelConfig()
        except (OSError, ValueError) as exc:
            self._problem(f"{name}: unreadable config.json", f"{path}: unreadable model config: {exc}", blocking=True)
            return
        if config.default_version is not None and config.default_version not in self.models[name]:
            unknown = f"default_version {config.default_version!r} is not one of {self.versions(name)}"
            self._problem(f"{name}: config.json's {unknown}", f"{path}: {unknown}", blocking=True)
            return
        self.configs[name] = config

    def _load(self, manifest_path: Path) -> None:
        directory = manifest_path.parent
        where = f"{directory.parent.name}/{directory.name}"
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            self._problem(f"{where}: unreadable manifest", f"skipping {manifest_path}: {exc}")
            return
        if (manifest.name, manifest.version) != (directory.parent.name, directory.name):
            named = f"{manifest.name}/{manifest.version}"
            self._problem(f"{where}: its manifest says {named}; a version is served only from the folders its "
                          "manifest names", f"skipping {manifest_path}: it names {named}")
            return
        entry = ModelVersion(manifest, directory)
        self.models.setdefault(manifest.name, {})[manifest.version] = entry
        try:
            self._verify(entry)
        except ValueError as exc:
            self._failed(entry, str(exc))

    def _verify(self, entry: ModelVersion) -> None:
        manifest, directory = entry.manifest, entry.directory
        for file in manifest.graph_files:
            if file not in manifest.files:
                raise ValueError(f"{file} is loaded but not listed (with its sha256) in the manifest's files")
        own = directory.parent.resolve()
        for file, expected in manifest.files.items():
            # A file may be shared with another version of the same model (int8 versions use their float
            # version's gradcam.onnx), never reach outside the model's own directory.
            path = (directory / file).resolve()
            if not path.is_relative_to(own):
                raise ValueError(f"{file} is outside the model's directory")
            if not path.is_file():
                raise ValueError(f"{file} is missing")
            if _sha256(path) != expected.sha256:
                raise ValueError(f"{file} does not match the sha256 in its manifest")

    def _failed(self, entry: ModelVersion, error: str) -> None:
        entry.error = error
        entry.providers, entry.plan = [], None
        log.error("model %s/%s is unavailable: %s", entry.name, entry.version, error)

    def verified(self) -> dict[Key, Version]:
        """Every version whose files checked out, for the inference workers to load."""
        return {m.key: Version(m.directory, m.manifest) for versions in self.models.values()
                for m in versions.values() if m.error is None}

    def record(self, report: Started) -> None:
        """A worker's word per version: the providers its sessions got and (an ordinary worker's) how it runs
        them, or why they failed."""
        for key, outcome in report.versions.items():
            entry = self.models[key[0]][key[1]]
            if isinstance(outcome, Loaded):
                entry.providers, entry.fallback, entry.error = outcome.providers, outcome.fallback, None
                if not report.heavy:
                    entry.plan = outcome.plan
                log.info("loaded %s/%s on %s", entry.name, entry.version, ",".join(outcome.providers))
            else:
                self._failed(entry, public(outcome))  # ONNX Runtime's messages may name files

    def all_versions(self) -> list[ModelVersion]:
        return [self.models[name][version] for name in self.names() for version in self.versions(name)]

    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=_version_key)

    def default_version(self, name: str) -> str:
        """The config's default_version, else the latest (highest) version."""
        config = self.configs.get(name)
        return config.default_version if config and config.default_version else self.versions(name)[-1]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The servable version a request names; ModelNotFound (listing what there is) otherwise."""
        model = self.find(name, version)
        if model.status != "ready":
            why = model.error or "still loading"
            raise ModelNotFound(f"model {model.name}/{model.version} is unavailable ({why}); see /readyz",
                                available=self.names())
        return model

    def find(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a request names, servable or not (its metadata says which)."""
        versions = self.models.get(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}; available: {', '.join(self.names()) or 'none'}",
                                available=self.names())
        version = version or self.default_version(name)
        if version not in versions:
            available = self.versions(name)
            raise ModelNotFound(f"model {name!r} has no version {version!r}; available: {', '.join(available)}",
                                available=available)
        return versions[version]
