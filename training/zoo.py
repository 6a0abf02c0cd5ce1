"""Building the shipped zoo, one model at a time (``training zoo``; a module of its own so that parallel
jobs, each a spawned process, can import it)."""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from .recipes import RECIPES
from .train import TrainConfig, scene_file, scene_variant, train

RUNS = Path("runs")
STEP_OPTIONS = ("precision", "layout")  # how training steps run: options `train` and `zoo` both take


def step_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The step options given on the command line; the rest stay the recipe's."""
    return {option: getattr(args, option) for option in STEP_OPTIONS if getattr(args, option) is not None}


def build(name: str, args: argparse.Namespace) -> None:
    """Train (unless --skip-train), export and quantize one shipped model."""
    from .export import export_run

    config = replace(RECIPES[name], threads=args.threads or (1 if args.jobs > 1 else 0), **step_overrides(args))
    if not args.skip_train:
        train(config, RUNS / name, bars=args.jobs == 1, scene_cache=args.scene_cache)  # parallel jobs: epoch lines only
    manifest = export_run(RUNS / name, args.models_dir, name=name, version=args.version)
    external = ", ".join(f"{set_name} {score.accuracy:.1%}" for set_name, score in manifest.metrics.external.items())
    print(f"{name}: test accuracy {manifest.metrics.test_accuracy:.2%}; external: {external} "
          f"→ {args.models_dir}/{name}/{args.version}/", flush=True)
    if args.int8_version:
        quantize_one(args.models_dir, name, args.version, args.int8_version)


def shared_scenes(names: list[str]) -> dict[str, tuple[TrainConfig, int]]:
    """The training epochs' scenes that more than one of ``names`` trains on, by file name (scene_file), each
    with a recipe and variant that draws it."""
    wanted: dict[str, list[tuple[TrainConfig, int]]] = defaultdict(list)
    for name in names:
        config = RECIPES[name]
        if config.augment:
            for variant in map(scene_variant, range(1, config.epochs + 1)):
                wanted[scene_file(config, variant)].append((config, variant))
    return {file: users[0] for file, users in wanted.items() if len(users) > 1}


def quantize_one(models_dir: Path, name: str, source: str, version: str) -> bool:
    from .quantize import QuantizationRejected, quantize_version

    try:
        manifest = quantize_version(models_dir, name, source=source, version=version)
    except QuantizationRejected as exc:
        print(f"{exc}")
        return False
    assert manifest.export.quantization is not None
    print(f"{name}: int8 test accuracy {manifest.metrics.test_accuracy:.2%} "
          f"(drop {manifest.export.quantization.accuracy_drop * 100:+.1f} pt) → {models_dir}/{name}/{version}/")
    return True
