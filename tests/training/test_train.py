"""A one-epoch smoke train on a small slice really lowers the loss, deterministically."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from training.architectures import create_model
from training.data import PREPROCESSING, mnist_digits
from training.train import TrainConfig, cam_box_loss, store_training_scenes, to_input, train, training_precision
from training.zoo import shared_scenes


def test_one_epoch_on_a_slice_lowers_the_loss(tmp_path):
    config = TrainConfig("mnist_cnn_a", "mnist", epochs=1, batch_size=32, limit=640, augment=False, threads=2)
    data = mnist_digits("val")
    x = to_input(data.images, PREPROCESSING["mnist"], create_model("mnist_cnn_a").input_spec)
    y = torch.from_numpy(data.labels)
    torch.manual_seed(config.seed)
    untrained = create_model("mnist_cnn_a").eval()
    with torch.no_grad():
        before = F.cross_entropy(untrained(x), y).item()
    result = train(config, tmp_path, progress=False)
    with torch.no_grad():
        after = F.cross_entropy(result.model(x), y).item()
    assert after < 0.8 * before  # 20 Adam steps: 2.31 → about 1.7
    assert result.history[0]["val_loss"] == after or abs(result.history[0]["val_loss"] - after) < 1e-5
    for artifact in ("checkpoint.pt", "report.json", "training.png", "confusion.png"):
        assert (tmp_path / artifact).stat().st_size > 0
    assert sum(map(sum, result.confusion)) == 500
    # Trained channels-last, handed back in PyTorch's default layout: what export and the checkpoint see.
    assert all(weights.is_contiguous() for weights in result.model.state_dict().values())

    again = train(config, None, progress=False)
    assert again.history == result.history  # same seed, same numbers


def test_bfloat16_steps_learn_too_and_keep_float32_weights():
    config = TrainConfig("mnist_cnn_a", "mnist", epochs=1, batch_size=32, limit=640, augment=False, threads=2,
                         precision="float32")
    exact = train(config, None, progress=False)
    mixed = train(replace(config, precision="bfloat16"), None, progress=False)
    assert (exact.config.precision, mixed.config.precision) == ("float32", "bfloat16")  # what the report records
    assert all(weights.dtype == torch.float32 for weights in mixed.model.state_dict().values())
    assert mixed.history != exact.history  # the steps really ran in bfloat16
    # The same 20 steps, in bfloat16: validation loss within a tenth of float32's (about 1.7 each).
    assert abs(mixed.history[0]["val_loss"] - exact.history[0]["val_loss"]) < 0.1 * exact.history[0]["val_loss"]


def test_the_layouts_train_the_same_model_summed_in_another_order():
    config = TrainConfig("mnist_cnn_a", "mnist", epochs=1, batch_size=32, limit=640, augment=False, threads=2,
                         precision="float32")
    nhwc = train(config, None, progress=False)
    nchw = train(replace(config, layout="nchw"), None, progress=False)
    assert (nhwc.report()["config"]["layout"], nchw.report()["config"]["layout"]) == ("nhwc", "nchw")
    for name, weights in nhwc.model.state_dict().items():  # the same 20 steps: equal up to float32 rounding
        torch.testing.assert_close(weights, nchw.model.state_dict()[name], rtol=1e-3, atol=1e-4)
    assert abs(nhwc.history[0]["val_loss"] - nchw.history[0]["val_loss"]) < 1e-3


def test_auto_precision_is_resolved_before_training_and_recorded():
    result = train(TrainConfig("lenet5", "mnist", epochs=1, limit=64, augment=False, threads=1), None, progress=False)
    assert result.config.precision == training_precision("auto") in ("float32", "bfloat16")
    assert result.report()["config"]["precision"] == result.config.precision


def test_to_input_pads_28_to_32_like_lenet():
    x = to_input(mnist_digits("test").images[:2], PREPROCESSING["mnist"], create_model("lenet5").input_spec)
    assert x.shape == (2, 1, 32, 32) and x.max() <= 1
    assert x[:, :, :2].abs().sum() == 0 and x[:, :, :, -2:].abs().sum() == 0


def test_box_loss_is_low_when_the_cam_is_on_the_box_and_high_when_it_is_off():
    model = create_model("cam_net")
    weights = model.cam_linear.weight  # 10 × 64
    label = torch.tensor([3])
    box = torch.tensor([[16, 16, 32, 32]])  # 64×64 input, 16×16 cells of 4 px: cells 4..7 in each axis
    on, off = torch.zeros(1, 64, 16, 16), torch.zeros(1, 64, 16, 16)
    on[0, :, 4:8, 4:8] = 5 * weights[3][:, None, None].sign()  # the class's CAM high on the box only
    off[0, :, 10:14, 10:14] = 5 * weights[3][:, None, None].sign()
    inside, outside = cam_box_loss(model, on, label, box).item(), cam_box_loss(model, off, label, box).item()
    uniform = cam_box_loss(model, torch.zeros(1, 64, 16, 16), label, box).item()
    assert inside < 0.01 and abs(uniform - torch.log(torch.tensor(256 / 16)).item()) < 1e-4 and outside > uniform
    # A box narrower than a cell (a thin "1") still counts the cells it covers in part: finite, not inf.
    assert torch.isfinite(cam_box_loss(model, off, label, torch.tensor([[17, 16, 19, 32]])))


def test_box_attention_needs_a_gap_net_on_placed_digits():
    with pytest.raises(ValueError, match="box-attention"):
        train(TrainConfig("lenet5", "mnist", epochs=1, box_attention=1.0), None, progress=False)


def test_the_zoo_draws_once_only_the_scenes_several_models_train_on():
    # lenet5 (40 epochs) and mnist_cnn_a (30) train on the same MNIST scenes: variant 0 (epoch 1), 2..30.
    shared = shared_scenes(["lenet5", "mnist_cnn_a"])
    assert sorted(variant for _, variant in shared.values()) == [0, *range(2, 31)]
    assert shared_scenes(["lenet5", "resnet_small"]) == {}  # gray and RGB scenes differ


@pytest.mark.slow
def test_a_model_trained_on_stored_scenes_is_the_model_trained_on_freshly_drawn_ones(tmp_path):
    config = TrainConfig("mnist_cnn_a", "mnist", epochs=2, batch_size=64, limit=320, threads=1)
    for variant in (0, 2):  # epochs 1 and 2
        store_training_scenes(config, variant, tmp_path)
    stored = train(config, None, progress=False, scene_cache=tmp_path)
    drawn = train(config, None, progress=False)
    assert stored.history == drawn.history
    for name, weights in drawn.model.state_dict().items():
        assert torch.equal(stored.model.state_dict()[name], weights), name
