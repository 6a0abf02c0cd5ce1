"""Layer-by-layer architecture summary (what torchinfo / Keras ``model.summary()`` show).

It is computed once, at export, from the real module with forward hooks, and shipped in the manifest:
the service answers ``/summary`` from it without torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .architectures import CNN

WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(value: int | tuple[int, ...]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def layer_rows(model: CNN) -> list[dict[str, Any]]:
    """One row per leaf module, in execution order, for a single input."""
    rows: list[dict[str, Any]] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            params = list(module.parameters(recurse=False))
            row: dict[str, Any] = {
                "name": name,
                "type": type(module).__name__,
                "input_shape": list(inputs[0].shape[1:]),
                "output_shape": list(output.shape[1:]),
                "kernel": None, "stride": None, "padding": None, "dilation": None,
                "params": sum(p.numel() for p in params),
                "trainable_params": sum(p.numel() for p in params if p.requires_grad),
                "macs": _macs(module, output),
            }
            if isinstance(module, WINDOWED):
                row.update(kernel=_pair(module.kernel_size), stride=_pair(module.stride), padding=_pair(module.padding),
                           dilation=_pair(getattr(module, "dilation", 1)))
            rows.append(row)
        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if name and not list(module.children())
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *model.input_spec.shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return rows


def summarize(model: CNN) -> dict[str, Any]:
    rows = layer_rows(model)
    params = list(model.parameters())
    return {
        "input_shape": list(model.input_spec.shape),
        "layers": rows,
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "macs": sum(row["macs"] for row in rows),
        "size_bytes": sum(p.numel() * p.element_size() for p in params),
    }
