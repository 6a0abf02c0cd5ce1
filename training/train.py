"""The training loop: Adam, cross-entropy, mini-batches, early stopping on validation loss with the
best checkpoint kept (as in the material), a loss/accuracy plot and a test report."""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix
from tqdm import tqdm

from service.manifest import Preprocessing
from service.preprocessing import fit, normalise

from .architectures import CNN, InputSpec, create_model
from .data import DEFAULT_SEED, LABELS, PREPROCESSING, Mixture, load_dataset, pictures, scene_dataset, validation_set
from .plots import plot_confusion, plot_history

Precision = Literal["float32", "bfloat16"]
Layout = Literal["nhwc", "nchw"]


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    dataset: str = "mnist"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 5
    augment: bool = True  # fresh scenes every epoch (training.augment); off: the plain dataset, as is
    printed: int = 2000   # printed glyphs in each epoch's scenes, beside the MNIST digits
    scans: int = 1500     # training digits also drawn as low-resolution form scans, each epoch
    seed: int = DEFAULT_SEED
    threads: int = 0  # 0: torch's default (one per core)
    limit: int = 0    # train on this many evenly spread training images (0: all); for smoke tests
    label_smoothing: float = 0.0
    # Weight of the box-attention term (GAP nets on placed digits, see cam_box_loss): it pulls the
    # true class's CAM onto the digit's box. 0: labels only, as in the CAM paper.
    box_attention: float = 0.0
    # What the training steps multiply in: "bfloat16" autocasts the convolutions and matrix products (the
    # weights, the optimiser, the losses and validation stay float32); "auto" is resolved by
    # training_precision when training starts, and the run records what it resolved to.
    precision: Precision | Literal["auto"] = "auto"
    # The memory layout of the weights and batches while training: channels-last ("nhwc"), which oneDNN's CPU
    # convolutions run natively, 1.1–1.5× faster a step in float32 and 1.2–1.9× in bfloat16 than PyTorch's
    # default "nchw" (batch 32, one thread; the README's table). The same model either way, summed in
    # another order: another draw. The trained model is handed back in NCHW.
    layout: Layout = "nhwc"

    @property
    def mixture(self) -> Mixture:
        """What each epoch's scenes hold besides the split's MNIST digits."""
        return Mixture(printed=self.printed, scans=self.scans)


@dataclass
class TrainResult:
    config: TrainConfig
    model: CNN
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    test_accuracy: float = 0.0
    confusion: list[list[int]] = field(default_factory=list)
    duration_s: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "history": self.history,
            "test_accuracy": self.test_accuracy,
            "confusion_matrix": self.confusion,
            "duration_s": round(self.duration_s, 1),
            "torch": torch.__version__,
        }


def fitted(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 N×C×h×w images fitted into the content size by the service's own functions (MNIST's
    crop-and-centre, the RGB nets' letterbox), still uint8: no train/serve skew."""
    contents = [one.content for one in fit(pictures(images), prep)]
    return np.stack(contents).reshape(len(contents), *contents[0].shape[:2], -1).transpose(0, 3, 1, 2)


def to_input(images: np.ndarray, prep: Preprocessing, spec: InputSpec) -> torch.Tensor:
    """uint8 N×C×h×w images → the net's float N×C×H×W input, fitted, normalised and padded (LeNet-5's
    32×32 around a 28×28 digit) as the service does it."""
    return torch.from_numpy(normalise(fitted(images, prep), prep, (spec.height, spec.width)))


def training_precision(requested: Precision | Literal["auto"]) -> Precision:
    """``auto``: bfloat16 where the CPU multiplies it in hardware (Intel AMX tiles, or AVX-512 BF16 dot products
    as on AMD Zen 4), float32 elsewhere, where oneDNN would emulate it. A training step (batch 32, one thread)
    runs 1.1–1.9× faster with AMX (alexnet_small 1.9×, vgg_small 1.65×, cam_net 1.55×, mnist_cnn_b 1.55×,
    resnet_small 1.44×, inception_small and lenet5 1.1×) and 1.3–2.0× with AVX-512 BF16 on an AMD EPYC
    (NCHW / channels-last: alexnet_small 1.37 / 1.57×, cam_net 1.34 / 1.97×, mnist_cnn_b 1.50 / 1.59×)."""
    if requested == "auto":
        hardware_bf16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        return "bfloat16" if hardware_bf16 else "float32"
    return requested


def scene_variant(epoch: int) -> int:
    """The scenes an epoch trains on: epoch 1 the split's own draw (variant 0, which int8 calibration also
    reads), epoch k its own variant k."""
    return 0 if epoch == 1 else epoch


def scene_file(config: TrainConfig, variant: int) -> str:
    """What an epoch's training scenes depend on — the dataset, seed, variant and mixture, not the model —
    as a file name: models whose scenes share it train on the very same images."""
    mixture = config.mixture
    return (f"{config.dataset}-seed{config.seed}-variant{variant}-printed{mixture.printed}-scans{mixture.scans}"
            f"-clean{mixture.clean}.npz")


def draw_training_scenes(config: TrainConfig, variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An epoch's training scenes, fitted (uint8 N×C×h×w), with their labels and boxes."""
    data = scene_dataset(config.dataset, "train", config.seed, variant, config.mixture)
    return fitted(data.images, PREPROCESSING[config.dataset]), data.labels, data.boxes


def store_training_scenes(config: TrainConfig, variant: int, cache: Path) -> None:
    """Draw an epoch's scenes once into ``cache`` for every model of a zoo run that trains on them: drawing
    and fitting 7,500 scenes takes 5–6 s, a fifth of an RGB net's epoch."""
    pixels, labels, boxes = draw_training_scenes(config, variant)
    np.savez(cache / scene_file(config, variant), pixels=pixels, labels=labels, boxes=boxes)


def training_scenes(config: TrainConfig, variant: int,
                    cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An epoch's scenes as draw_training_scenes gives them: read from ``cache`` where a zoo run stored them."""
    path = cache / scene_file(config, variant) if cache else None
    if path and path.exists():
        with np.load(path) as stored:
            return stored["pixels"], stored["labels"], stored["boxes"]
    return draw_training_scenes(config, variant)


@torch.no_grad()
def predict(model: CNN, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model: CNN, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = predict(model, x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def cam_box_loss(model: CNN, maps: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """-log of the share of a spatial softmax over the true class's CAM that falls on the digit's box
    (x0, y0, x1, y1 in input pixels), each feature cell counted by the fraction of it the box covers.
    A softmax, not the ReLU'd map: that share could be zeroed by switching the whole map off."""
    cam = torch.einsum("bkhw,bk->bhw", maps, model.cam_linear.weight[labels])
    h, w = cam.shape[1:]
    spec = model.input_spec

    def covered(cells: int, size: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """batch × cells: the fraction of each cell's extent along one axis inside [low, high)."""
        step = size / cells
        start = torch.arange(cells, dtype=torch.float32) * step
        return ((torch.minimum(start + step, high[:, None]) - torch.maximum(start, low[:, None])) / step).clamp(0, 1)

    b = boxes.float()
    share = covered(h, spec.height, b[:, 1], b[:, 3])[:, :, None] * covered(w, spec.width, b[:, 0], b[:, 2])[:, None, :]
    p = cam.flatten(1).softmax(1)
    return -(p * share.flatten(1)).sum(1).clamp_min(1e-12).log().mean()


def train(config: TrainConfig, out_dir: Path | None = None, progress: bool = True, bars: bool = True,
          scene_cache: Path | None = None) -> TrainResult:
    """Train ``config.arch``; with ``out_dir``, write checkpoint, report and plots there. ``progress``: a line
    per epoch, and with ``bars`` a progress bar per epoch too. ``scene_cache``: see training_scenes."""
    config = replace(config, precision=training_precision(config.precision))
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    layout = torch.channels_last if config.layout == "nhwc" else torch.contiguous_format
    model = create_model(config.arch, num_classes=len(LABELS)).to(memory_format=layout)
    spec = model.input_spec

    if config.box_attention and not (model.supports_cam and config.dataset == "placed"):
        raise ValueError("--box-attention needs a GAP (CAM) architecture and the placed dataset, which has boxes")

    def tensors(split: str, variant: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Inputs, labels and (placed digits) boxes of a split; scenes for train and val when augmenting."""
        prep = PREPROCESSING[config.dataset]
        if split == "train" and config.augment:
            pixels, labels, boxes = training_scenes(config, variant, scene_cache)
        else:
            data = (validation_set(config.dataset, config.seed, config.augment) if split == "val"
                    else load_dataset(config.dataset, split, config.seed))
            pixels, labels, boxes = fitted(data.images, prep), data.labels, data.boxes
        if pixels.shape[1] != spec.channels:
            raise ValueError(f"{config.arch} takes {spec.channels}-channel input; dataset {config.dataset!r} "
                             f"has {pixels.shape[1]} "
                             f"(use --dataset {'placed' if spec.channels == 3 else 'mnist'})")
        keep = slice(None)
        if split == "train" and config.limit:
            keep = np.linspace(0, len(labels) - 1, config.limit).astype(int)  # spread over the classes
        x = torch.from_numpy(normalise(pixels[keep], prep, (spec.height, spec.width)))
        return x, torch.from_numpy(labels[keep]), None if boxes is None else torch.from_numpy(boxes[keep])

    x_train, y_train, train_boxes = tensors("train", scene_variant(1))
    x_val, y_val, _ = tensors("val")
    x_test, y_test, _ = tensors("test")

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Cosine decay over the epoch budget: most of the final accuracy comes in the low-rate epochs.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    result = TrainResult(config, model)
    best_loss, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        if config.augment and epoch > 1:
            x_train, y_train, train_boxes = tensors("train", scene_variant(epoch))
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"{config.arch} epoch {epoch}/{config.epochs}",
                   unit="batch", disable=not (progress and bars), leave=False)
        for start in bar:
            idx = order[start:start + config.batch_size]
            xb, yb = x_train[idx].contiguous(memory_format=layout), y_train[idx]
            with torch.autocast("cpu", torch.bfloat16, enabled=config.precision == "bfloat16"):
                logits, maps = model.forward_with_features(xb)
            logits = logits.float()
            loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            if config.box_attention:
                loss = loss + config.box_attention * cam_box_loss(model, maps.float(), yb, train_boxes[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_loss, val_acc = evaluate(model, x_val, y_val)
        scheduler.step()
        row = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen, "val_loss": val_loss,
               "val_accuracy": val_acc}
        result.history.append(row)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_state, stale, result.best_epoch = val_loss, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
        if progress:
            tqdm.write(f"{config.arch} epoch {epoch:>2}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
                       f"val_loss {val_loss:.4f} val_acc {val_acc:.4f}{'  *best' if improved else ''}")
            sys.stdout.flush()  # epoch lines show up promptly in logs and from parallel zoo jobs
        if stale >= config.patience:
            if progress:
                tqdm.write(f"early stop: no val_loss improvement for {config.patience} epochs")
            break
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format).eval()
    test_pred = predict(model, x_test).argmax(1).numpy()
    result.test_accuracy = float(accuracy_score(y_test.numpy(), test_pred))
    result.confusion = confusion_matrix(y_test.numpy(), test_pred, labels=range(len(LABELS))).tolist()
    result.duration_s = time.perf_counter() - started
    if out_dir is not None:
        save_run(result, out_dir)
    return result


def save_run(result: TrainResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(result.config), "state_dict": result.model.state_dict()}, out_dir / "checkpoint.pt")
    (out_dir / "report.json").write_text(json.dumps(result.report(), indent=2))
    plot_history(result.history, result.best_epoch, out_dir / "training.png", title=result.config.arch)
    plot_confusion(result.confusion, LABELS, out_dir / "confusion.png",
                   title=f"{result.config.arch}: test accuracy {result.test_accuracy:.2%}")


def load_run(run_dir: Path) -> tuple[TrainConfig, CNN, dict[str, Any]]:
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    # Runs from before these options trained in float32, NCHW.
    config = TrainConfig(**{"precision": "float32", "layout": "nchw", **checkpoint["config"]})
    model = create_model(config.arch, num_classes=len(LABELS))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return config, model, json.loads((run_dir / "report.json").read_text())
