"""How each model is trained: the settings `python -m training zoo` (and `make models`) use."""

from .train import TrainConfig

RECIPES: dict[str, TrainConfig] = {
    "lenet5": TrainConfig("lenet5", "mnist", epochs=40, batch_size=64, patience=6),
    "mnist_cnn_a": TrainConfig("mnist_cnn_a", "mnist", epochs=30, batch_size=64, patience=6),
    # The material's settings for B: batch 200, up to 30 epochs, early stopping with patience 10.
    "mnist_cnn_b": TrainConfig("mnist_cnn_b", "mnist", epochs=30, batch_size=200, patience=10),
    # Label smoothing (0.1) regularises VGG's large FC head.
    "vgg_small": TrainConfig("vgg_small", "placed", epochs=60, batch_size=32, lr=1e-3, patience=8, label_smoothing=0.1),
    "resnet_small": TrainConfig("resnet_small", "placed", epochs=60, batch_size=32, lr=1e-3, patience=8),
    "inception_small": TrainConfig("inception_small", "placed", epochs=90, batch_size=32, lr=1e-3, patience=10),
    "alexnet_small": TrainConfig("alexnet_small", "placed", epochs=60, batch_size=32, lr=1e-3, patience=8),
    "cam_net": TrainConfig("cam_net", "placed", epochs=30, batch_size=32, lr=1e-3, patience=8),
}

# Registered, tested and trainable, but below the 95 % floor on placed digits, so not in models/ yet.
# (inception_small reached 94.2 % with 60 epochs; 90 epochs with patience 10 gave 96.2 %.)
NOT_SHIPPED: dict[str, str] = {
    "alexnet_small": "stays at chance accuracy on placed digits with every setting tried "
                     "(learning rate 1e-3 / 3e-4, with and without dropout, first-conv stride 4 or 2)",
}

SHIPPED: dict[str, TrainConfig] = {name: config for name, config in RECIPES.items() if name not in NOT_SHIPPED}
