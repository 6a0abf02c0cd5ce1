"""Scaled-down AlexNet-, VGG-, ResNet- and Inception-style nets and the CAM network.

Each keeps its design's defining idea at a size that trains on 2 CPU cores in minutes: AlexNet's large
strided first convolution and overlapping max pooling (Krizhevsky et al. 2012), VGG's stacks of 3×3
convolutions with channels doubling as pooling halves the maps (Simonyan & Zisserman 2014), ResNet's
residual blocks with 1×1 projection shortcuts (He et al. 2015), Inception's parallel 1×1 / 3×3 / 5×5 /
pool branches with 1×1 bottlenecks (Szegedy et al. 2014), and the CAM network's conv stack → global
average pooling → one linear layer (Zhou et al. 2016), all on 64×64 RGB placed-digit canvases. Each
starts with a parameter-free per-image standardisation, so the ONNX graph carries it and the service only
scales pixels to [0, 1]. No batch norm anywhere: at these depths Adam trains without it, and it keeps
every parameter a plain ONNX initializer (the summary counts must match the file).
"""

import torch
from torch import nn

from .registry import CNN, InputSpec, register

RGB_64 = InputSpec(3, 64, 64)


class Standardize(nn.Module):
    """Per image and channel: subtract the mean, divide by the standard deviation. The canvases'
    backgrounds and digit colours are random; without this the nets sit at chance for epochs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self._spatial_mean(x)
        std = self._spatial_mean((x - mean).pow(2)).add(1e-4).sqrt()
        return (x - mean) / std

    @staticmethod
    def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
        # Rows, then columns: the same mean, but ONNX Runtime then sums 64 numbers at a time instead
        # of 4,096 in one float32 accumulator, which kept its logits 1e-4 away from PyTorch's.
        return x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)


def conv_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.ReLU()]


def gap_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling then one linear layer: the head CAM needs."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ReluCNN(CNN):
    """He (Kaiming) initialisation for ReLU nets: with torch's default init the signal shrinks layer
    by layer, and the GAP nets sat at chance for many epochs."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__(features, head)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)


@register("alexnet_small", "AlexNet-style: large strided 8×8 first conv, overlapping max-pools, dropout FC head")
class AlexNetSmall(ReluCNN):
    """Large strided first conv (8×8 / 2), ReLU, overlapping 3×3 / 2 max-pools, FC head with dropout
    after each hidden FC layer (as AlexNet's FC6 / FC7)."""

    input_spec = RGB_64

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                Standardize(),
                *conv_relu(3, 32, 8, stride=2, padding=2),  # 64 → 31
                nn.MaxPool2d(3, 2),                         # 31 → 15 (overlapping)
                *conv_relu(32, 64, 5, padding=2),
                *conv_relu(64, 96, 3, padding=1),
                *conv_relu(96, 96, 3, padding=1),
            ),
            head=nn.Sequential(
                nn.MaxPool2d(3, 2),                         # 15 → 7
                nn.Flatten(),
                nn.Linear(7 * 7 * 96, 256), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(256, num_classes),
            ),
        )
        # Kaiming-initialised, this head (two ReLU layers, each followed by dropout's ×2) starts with logits
        # of standard deviation ~10 (loss 18 on the first batch); the first Adam steps then shrink everything
        # and kill most ReLU units for good, and the net sits at chance. Glorot for the FC layers and a zero
        # output layer start it at the uniform prediction instead (measured: at chance for 8+ epochs → 70 %
        # validation accuracy by epoch 10).
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.head[-1].weight)


@register("vgg_small", "VGG-style: stacks of 3×3 convs, pooling halves the maps, channels double, FC head")
class VggSmall(ReluCNN):
    """Only 3×3 convs, two per stage; each pool halves H and W, each stage doubles the channels."""

    input_spec = RGB_64

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                Standardize(),
                *conv_relu(3, 12, 3, padding=1), *conv_relu(12, 12, 3, padding=1), nn.MaxPool2d(2, 2),
                *conv_relu(12, 24, 3, padding=1), *conv_relu(24, 24, 3, padding=1), nn.MaxPool2d(2, 2),
                *conv_relu(24, 48, 3, padding=1), *conv_relu(48, 48, 3, padding=1),
            ),
            head=nn.Sequential(
                nn.MaxPool2d(2, 2), nn.Flatten(),
                nn.Linear(8 * 8 * 48, 128), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(128, num_classes),
            ),
        )


class BasicBlock(nn.Module):
    """``a[l+2] = relu(z[l+2] + shortcut(a[l]))``; a 1×1 projection when the channel count changes.

    Blocks keep the map size; the net downsamples with 2×2 max-pools between stages, because a
    strided 1×1 projection on an even-sized map breaks the whole-number rule for ``(W − F + 2P)/S + 1``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut: nn.Module = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))


@register("resnet_small", "ResNet-style: basic blocks with identity and 1×1-projection shortcuts, GAP head")
class ResNetSmall(ReluCNN):
    input_spec = RGB_64
    supports_cam = True

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                Standardize(),
                *conv_relu(3, 24, 3, padding=1), nn.MaxPool2d(2, 2),   # 64 → 32
                BasicBlock(24, 24),                                    # identity shortcut
                nn.MaxPool2d(2, 2),                                    # 32 → 16
                BasicBlock(24, 48),                                    # 1×1 projection
                nn.MaxPool2d(2, 2),                                    # 16 → 8
                BasicBlock(48, 96),                                    # 1×1 projection
            ),
            head=gap_head(96, num_classes),
        )


class InceptionModule(nn.Module):
    """Parallel 1×1, 1×1→3×3, 1×1→5×5 and 3×3-pool→1×1 branches, concatenated on channels."""

    def __init__(self, c_in: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = nn.Sequential(*conv_relu(c_in, c1, 1))
        self.branch3 = nn.Sequential(*conv_relu(c_in, c3_reduce, 1), *conv_relu(c3_reduce, c3, 3, padding=1))
        self.branch5 = nn.Sequential(*conv_relu(c_in, c5_reduce, 1), *conv_relu(c5_reduce, c5, 5, padding=2))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_relu(c_in, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


@register("inception_small", "Inception-style: parallel 1×1/3×3/5×5/pool branches with 1×1 bottlenecks, GAP head")
class InceptionSmall(ReluCNN):
    input_spec = RGB_64
    supports_cam = True

    def __init__(self, num_classes: int = 10) -> None:
        a = InceptionModule(32, 32, 24, 48, 8, 16, 16)                 # → 112 channels
        b = InceptionModule(a.out_channels, 48, 32, 64, 12, 24, 24)    # → 160 channels
        super().__init__(
            features=nn.Sequential(
                Standardize(),
                *conv_relu(3, 32, 4, stride=2, padding=1),  # 64 → 32
                nn.MaxPool2d(2, 2),                         # 32 → 16
                a, b,
            ),
            head=gap_head(b.out_channels, num_classes),
        )


@register("cam_net", "CAM network: conv stack → global average pooling → one linear layer")
class CamNet(ReluCNN):
    """Conv stack → global average pooling → one linear layer (Zhou et al. 2016)."""

    input_spec = RGB_64
    supports_cam = True

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                Standardize(),
                *conv_relu(3, 24, 3, padding=1), nn.MaxPool2d(2, 2),    # 64 → 32
                *conv_relu(24, 48, 3, padding=1), nn.MaxPool2d(2, 2),   # 32 → 16
                *conv_relu(48, 64, 3, padding=1),
                *conv_relu(64, 64, 3, padding=1),                       # 16×16 maps for the CAM
            ),
            head=gap_head(64, num_classes),
        )
