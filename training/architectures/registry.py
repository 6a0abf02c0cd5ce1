"""Architectures registered by name (timm style): one decorator, one factory.

Every registered network is a :class:`CNN`: a ``features`` stack that ends at the layer heatmaps are
computed from, and a ``head`` that turns those feature maps into class logits. Keeping that split in
the type is what lets export write the feature maps as a second output and the Grad-CAM graph as
``head``'s gradient, without per-architecture code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a network eats: channels first, as the ONNX graph does."""

    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


class CNN(nn.Module):
    """``logits = head(features(x))``; ``features`` ends at the heatmap layer."""

    input_spec: InputSpec
    #: True when ``head`` is global average pooling then one linear layer, so CAM applies.
    supports_cam: bool = False

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(x)
        return self.head(maps), maps

    @property
    def cam_layer(self) -> str:
        """Dotted name of the module whose output the heatmaps are computed from."""
        last_name = list(self.features.named_children())[-1][0]
        return f"features.{last_name}"

    @property
    def cam_linear(self) -> nn.Linear:
        """A GAP head's linear layer: its weight row c is CAM's ``w_k^c``."""
        if not self.supports_cam:
            raise ValueError(f"{type(self).__name__} has no GAP + linear head; use Grad-CAM")
        return [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]

    def cam_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The class weights ``w_k^c`` (classes × maps) and biases, detached for export."""
        return self.cam_linear.weight.detach(), self.cam_linear.bias.detach()


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[..., CNN]
    description: str


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, description: str) -> Callable[[Callable[..., CNN]], Callable[..., CNN]]:
    def decorator(builder: Callable[..., CNN]) -> Callable[..., CNN]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = Architecture(name, builder, description)
        return builder

    return decorator


def list_architectures() -> list[str]:
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_architectures())}") from None


def create_model(name: str, num_classes: int = 10) -> CNN:
    return get_architecture(name).builder(num_classes=num_classes)
