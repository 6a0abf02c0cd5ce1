"""The networks the course material gives layer by layer: LeNet-5 (LeCun et al. 1998: 32×32×1 input, two
5×5 conv / average-pool stages, 120 → 84 → 10, tanh, 61,706 parameters) and the material's two MNIST CNNs
(A: conv 5×5×32, pool, conv 5×5×64, pool, dense 64, 118,346 parameters; B: conv 3×3×32, conv 3×3×64,
pool, dropout, dense 128, 1,199,882 parameters)."""

from torch import nn

from .registry import CNN, InputSpec, register


@register("lenet5", "LeNet-5 (LeCun et al. 1998): tanh, average pooling, 32×32 gray input")
class LeNet5(CNN):
    """32×32×1 → C1 5×5×6 → S2 avg → C3 5×5×16 → S4 avg → C5 (5×5 conv to 120) → F6 84 → 10, tanh."""

    input_spec = InputSpec(1, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2, 2),
                nn.Conv2d(6, 16, 5), nn.Tanh(),
            ),
            head=nn.Sequential(
                nn.AvgPool2d(2, 2),
                nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
                nn.Linear(120, 84), nn.Tanh(),
                nn.Linear(84, num_classes),
            ),
        )


@register("mnist_cnn_a", "MNIST CNN A from the material: two 5×5 conv/pool stages, Dense(64)")
class MnistCnnA(CNN):
    """Conv(32, 5×5) → pool → Conv(64, 5×5) → pool → Dense(64) → Dense(10), ReLU."""

    input_spec = InputSpec(1, 28, 28)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 5), nn.ReLU(),
            ),
            head=nn.Sequential(
                nn.MaxPool2d(2, 2), nn.Flatten(),
                nn.Linear(4 * 4 * 64, 64), nn.ReLU(),
                nn.Linear(64, num_classes),
            ),
        )


@register("mnist_cnn_b", "MNIST CNN B from the material: two 3×3 convs, pool, dropout, Dense(128)")
class MnistCnnB(CNN):
    """Conv(32, 3×3) → Conv(64, 3×3) → pool → Dropout .25 → Dense(128) → Dropout .5 → Dense(10)."""

    input_spec = InputSpec(1, 28, 28)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            features=nn.Sequential(
                nn.Conv2d(1, 32, 3), nn.ReLU(),
                nn.Conv2d(32, 64, 3), nn.ReLU(),
            ),
            head=nn.Sequential(
                nn.MaxPool2d(2, 2), nn.Dropout(0.25), nn.Flatten(),
                nn.Linear(12 * 12 * 64, 128), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(128, num_classes),
            ),
        )
