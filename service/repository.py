"""The model repository (Triton layout): ``<model_dir>/<name>/<version>/manifest.json`` beside
``model.onnx`` and ``gradcam.onnx``. Every version is verified (sha256) here at start; the inference
workers then load and warm it up, and say which execution provider it got (``record_sessions``)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import ModelNotFound
from .manifest import Manifest, ModelConfig
from .settings import Settings

log = logging.getLogger("service.repository")


@dataclass
class LoadedModel:
    manifest: Manifest
    directory: Path
    providers: list[str] = field(default_factory=list)  # what ONNX Runtime gave the workers' sessions
    error: str | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def key(self) -> tuple[str, str]:
        return self.manifest.name, self.manifest.version

    @property
    def status(self) -> str:
        return "ready" if self.providers and self.error is None else "failed"

    @cached_property
    def cam_weights(self) -> np.ndarray | None:
        """The GAP head's class weights (classes × maps), built once rather than per heatmap."""
        cam = self.manifest.heatmaps.cam
        return None if cam is None else np.asarray(cam.weights, np.float32)


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
    models: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)
    configs: dict[str, ModelConfig] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def load_all(self) -> None:
        root = self.settings.model_dir
        if not root.is_dir():
            self.errors.append(f"model directory {root} does not exist")
            log.error("model directory %s does not exist", root)
            return
        for manifest_path in sorted(root.glob("*/*/manifest.json")):
            if not manifest_path.parent.name.startswith("."):  # an export still being written
                self._load(manifest_path)
        if not self.models:
            self.errors.append(f"no models found under {root}")
        for name in self.models:
            self._load_config(name, root / name / "config.json")

    def _load_config(self, name: str, path: Path) -> None:
        try:
            config = ModelConfig.model_validate_json(path.read_text()) if path.exists() else ModelConfig()
        except (OSError, ValueError) as exc:
            self.errors.append(f"{path}: unreadable model config: {exc}")
            return
        if config.default_version is not None and config.default_version not in self.models[name]:
            self.errors.append(f"{path}: default_version {config.default_version!r} is not one of {self.versions(name)}")
            return
        self.configs[name] = config

    def _load(self, manifest_path: Path) -> None:
        directory = manifest_path.parent
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            self.errors.append(f"{manifest_path}: unreadable manifest: {exc}")
            log.error("skipping %s: %s", manifest_path, exc)
            return
        entry = LoadedModel(manifest, directory)
        self.models.setdefault(manifest.name, {})[manifest.version] = entry
        try:
            for file, expected in manifest.files.items():
                # A file may be shared with another version of the same model (int8 versions use their
                # float version's gradcam.onnx), never reach outside the model's own directory.
                if not (directory / file).resolve().is_relative_to(directory.parent.resolve()):
                    raise ValueError(f"{file} is outside the model's directory")
                if _sha256(directory / file) != expected.sha256:
                    raise ValueError(f"{file} does not match the sha256 in its manifest")
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the others down
            self._failed(entry, str(exc))

    def _failed(self, entry: LoadedModel, error: str) -> None:
        entry.error = error
        self.errors.append(f"{entry.name}/{entry.version}: {error}")
        log.error("failed to load %s/%s: %s", entry.name, entry.version, error)

    def verified(self) -> dict[tuple[str, str], Path]:
        """Every version whose files checked out, for the inference workers to load."""
        return {m.key: m.directory for versions in self.models.values() for m in versions.values() if m.error is None}

    def record_sessions(self, report: dict[tuple[str, str], list[str] | str]) -> None:
        """The workers' word per version: the providers its sessions got, or why they failed."""
        for key, outcome in report.items():
            entry = self.models[key[0]][key[1]]
            if isinstance(outcome, str):
                self._failed(entry, outcome)
            else:
                entry.providers = outcome
                log.info("loaded %s/%s on %s", entry.name, entry.version, ",".join(outcome))

    @property
    def ready(self) -> bool:
        return not self.errors and bool(self.models)

    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=_version_key)

    def default_version(self, name: str) -> str:
        """The config's default_version, else the latest (highest) version."""
        config = self.configs.get(name)
        return config.default_version if config and config.default_version else self.versions(name)[-1]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        versions = self.models.get(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r}; available: {', '.join(self.names()) or 'none'}",
                                available=self.names())
        version = version or self.default_version(name)
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; available: {', '.join(self.versions(name))}",
                                available=self.versions(name))
        model = versions[version]
        if model.status != "ready":
            raise ModelNotFound(f"model {name}/{version} failed to load: {model.error}", available=self.names())
        return model
