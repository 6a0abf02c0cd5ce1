"""``python -m training`` (or the ``training`` command): train, export and rebuild the model zoo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .architectures import get_architecture, list_architectures
from .data import DATASETS, DEFAULT_SEED
from .recipes import RECIPES
from .train import TrainConfig
from .zoo import RUNS, STEP_OPTIONS

MODELS = Path("models")


def _train(args: argparse.Namespace) -> int:
    from .train import train

    base = RECIPES.get(args.arch, TrainConfig(args.arch))
    options = ("dataset", "epochs", "batch_size", "lr", "patience", "printed", "scans", "seed", "threads",
               "label_smoothing", "box_attention", *STEP_OPTIONS)
    overrides = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
    if args.no_augment:
        overrides["augment"] = False
    config = replace(base, **overrides)
    out = args.out or RUNS / args.arch
    result = train(config, out)
    print(f"\n{config.arch}: test accuracy {result.test_accuracy:.2%} (best epoch {result.best_epoch}, "
          f"{result.duration_s:.0f} s) — run saved in {out}/")
    print("confusion matrix (rows: true, columns: predicted):")
    for label, row in enumerate(result.confusion):
        print(f"  {label}: " + " ".join(f"{v:4d}" for v in row))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_run

    manifest = export_run(args.run, args.models_dir, name=args.name, version=args.version)
    print(json.dumps({"name": manifest.name, "version": manifest.version, "architecture": manifest.architecture,
                      "test_accuracy": manifest.metrics.test_accuracy}))
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    from service.heap import malloc_tunables

    from .train import store_training_scenes
    from .zoo import build, shared_scenes

    names = args.names or list(RECIPES)
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise SystemExit(f"no recipe for: {', '.join(unknown)}; recipes: {', '.join(RECIPES)}")
    shared = [] if args.skip_train else list(shared_scenes(names).values())
    RUNS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scenes-", dir=RUNS) as scratch:
        cache = Path(scratch)
        # picklable for the jobs
        args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"}, scene_cache=cache)
        # Each job in a process of its own, whose malloc keeps the large arrays that every epoch allocates and
        # frees (its scenes, 92 MB, their float input, 368 MB, the scene batches while drawing) instead of
        # faulting them in afresh. Two alexnet_small trainings side by side (2 epochs each, scenes drawn in
        # the job): 3.1 M page faults and 7.3–7.7 s of system time a job without it, 0.85 M and 1.8–2.0 s
        # with it; 6–10 % less wall time, peak memory 2.2 GB against 1.7, the weights the same to the bit.
        # The whole zoo (float32): 71 minutes against 78. With more than one job, each trains with one thread.
        os.environ.update(malloc_tunables(1 << 30, 4 << 30))
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            drawn = [pool.submit(store_training_scenes, config, variant, cache) for config, variant in shared]
            for future in tqdm(as_completed(drawn), total=len(drawn), unit="epoch", disable=not drawn,
                               desc="drawing the training scenes several models share"):
                future.result()
            # Longest first, so the last job to start is a short one.
            for future in [pool.submit(build, name, args) for name in names]:
                future.result()
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .zoo import quantize_one

    shipped = [quantize_one(args.models_dir, name, args.source, args.version) for name in args.names]
    return 0 if all(shipped) else 1


def _rescore(args: argparse.Namespace) -> int:
    from service.manifest import version_manifests

    from .export import rescore_version

    found = version_manifests(args.models_dir)
    models = sorted({path.parent.parent.name for path in found})
    unknown = sorted(set(args.names) - set(models))
    if unknown:
        raise SystemExit(f"no model {', '.join(unknown)} in {args.models_dir}; models: {', '.join(models)}")
    for path in found:
        if args.names and path.parent.parent.name not in args.names:
            continue
        manifest = rescore_version(path.parent)
        worst = max(score.ece for score in manifest.metrics.external.values())
        print(f"{manifest.name} v{manifest.version}: temperature {manifest.calibration.temperature:.2f}, unsure "
              f"below {manifest.calibration.unsure_below:.3f}, worst external ECE {worst:.1%}", flush=True)
    return 0


def _examples(args: argparse.Namespace) -> int:
    """A few real test-split images for the README's curl commands (never seen in training)."""
    import numpy as np
    from PIL import Image

    from .data import mnist_digits, placed_digits
    from .external import printed_heldout, sklearn_digits

    args.out.mkdir(parents=True, exist_ok=True)
    digits, canvases = mnist_digits("test"), placed_digits("test")
    # The most typical test digit of each class: the split's first 7s are ambiguous ones (a closed loop)
    # that some nets read as 0, 1 or 9, and say they are unsure.
    Image.fromarray(digits.images[digits.typical(7), 0]).save(args.out / "digit_7.png")
    page = Image.fromarray(255 - digits.images[digits.typical(2), 0]).resize((168, 168), Image.Resampling.BICUBIC)
    page.save(args.out / "digit_2_dark_on_light.jpg", quality=90)
    index = int(np.flatnonzero(canvases.labels == 3)[1])
    Image.fromarray(canvases.images[index].transpose(1, 2, 0)).save(args.out / "placed_3.png")
    # From the external sets (test-only): a held-out font photographed, and another writer's 8×8 scan.
    printed, scans = printed_heldout(), sklearn_digits()
    printed.images[int(np.flatnonzero(printed.labels == 4)[0])].resize((288, 288), Image.Resampling.BICUBIC).save(
        args.out / "printed_4_photo.jpg", quality=85)
    scans.images[int(np.flatnonzero(scans.labels == 1)[0])].save(args.out / "scan_1.png")
    for path in sorted(args.out.iterdir()):
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import replace_in, tables

    generated = tables(args.models_dir)
    if args.write:
        args.write.write_text(replace_in(args.write.read_text(), generated))
        print(f"model tables updated in {args.write}")
    else:
        print(generated)
    return 0


def _fonts(args: argparse.Namespace) -> int:
    from . import fonts

    counts = fonts.build()
    print(f"{fonts.GLYPHS}: " + ", ".join(f"{n} {split} faces" for split, n in counts.items()))
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in list_architectures():
        print(f"{name:16s} {get_architecture(name).description}")
    return 0


def _step_options(parser: argparse.ArgumentParser) -> None:
    """How training steps run: the options `train` and `zoo` share."""
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"),
                        help="what training steps multiply in (default: the recipe's; auto, bfloat16 on CPUs that "
                             "multiply it in hardware (Intel AMX, AVX-512 BF16) and float32 elsewhere, unless it "
                             "names one); weights and validation are float32 either way")
    parser.add_argument("--layout", choices=("nhwc", "nchw"),
                        help="memory layout of weights and batches while training (default: the recipe's; nhwc, "
                             "channels-last, steps oneDNN's convolutions 1.1-1.9x faster)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training", description="Train, export and ship the CNN zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered architectures")
    p.set_defaults(func=_list)

    p = sub.add_parser("train", help="train one architecture; unset options take the shipped recipe's values")
    p.add_argument("arch", choices=list_architectures())
    p.add_argument("--dataset", choices=DATASETS, help="mnist (28×28 gray) or placed (64×64 RGB canvases)")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--patience", type=int, help="epochs without a better validation loss before stopping")
    p.add_argument("--printed", type=int, help="printed glyphs in each epoch's scenes, beside the MNIST digits")
    p.add_argument("--scans", type=int, help="training digits also drawn as low-resolution form scans, each epoch")
    p.add_argument("--seed", type=int, help=f"seed for the split, initialisation and batches (default {DEFAULT_SEED})")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: one per core)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (0: none)")
    p.add_argument("--box-attention", type=float,
                   help="GAP nets on placed digits: weight of the loss term that keeps the CAM inside the digit's box "
                        "(0: none)")
    p.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    _step_options(p)
    p.add_argument("--out", type=Path, help="run directory (default runs/<arch>)")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a training run to the model repository as ONNX + manifest")
    p.add_argument("run", type=Path, help="run directory written by `train`")
    p.add_argument("--name", help="model name in the repository (default: the architecture)")
    p.add_argument("--version", default="1", help="version directory (default 1)")
    p.add_argument("--models-dir", type=Path, default=MODELS)
    p.set_defaults(func=_export)

    p = sub.add_parser("rescore", help="score exported versions again (metrics, calibration, external sets) and "
                                       "rewrite their manifests; the graphs are not touched")
    p.add_argument("names", nargs="*", metavar="NAME", help="models in the repository (default: all of them)")
    p.add_argument("--models-dir", type=Path, default=MODELS)
    p.set_defaults(func=_rescore)

    p = sub.add_parser("examples", help="write example images from the test split (for the README)")
    p.add_argument("--out", type=Path, default=Path("examples"))
    p.set_defaults(func=_examples)

    p = sub.add_parser("report", help="the README's model tables, from the manifests")
    p.add_argument("--models-dir", type=Path, default=MODELS)
    p.add_argument("--write", type=Path, metavar="README", help="replace the tables in this file instead of printing")
    p.set_defaults(func=_report)

    p = sub.add_parser("fonts", help="re-render the printed-digit glyph set from the installed fonts (it ships in "
                                     "the repository; only needed after changing the font lineages)")
    p.set_defaults(func=_fonts)

    p = sub.add_parser("zoo", help="train and export the shipped models (what `make models` runs)")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(RECIPES)} (default: all of them)")
    p.add_argument("--skip-train", action="store_true", help="re-export the existing runs only")
    p.add_argument("--version", default="1")
    p.add_argument("--threads", type=int, help="torch threads per job (default: one per core; 1 with --jobs > 1)")
    p.add_argument("--jobs", type=int, default=1, help="models trained at once, each in its own process")
    p.add_argument("--int8-version", default="2", help="also write a static int8 version here ('' for none)")
    p.add_argument("--models-dir", type=Path, default=MODELS)
    _step_options(p)
    p.set_defaults(func=_zoo)

    p = sub.add_parser("quantize", help="add a static int8 (QDQ) version of exported models, calibrated on "
                                        "training images; refused if test accuracy drops more than 0.5 pt")
    p.add_argument("names", nargs="+", metavar="NAME", help="models in the repository")
    p.add_argument("--source", default="1", help="the float version to quantize (default 1)")
    p.add_argument("--version", default="2", help="version directory to write (default 2)")
    p.add_argument("--models-dir", type=Path, default=MODELS)
    p.set_defaults(func=_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
