"""The model registry: every architecture gives logits for any crop length, survives the
artifact round trip and names its Grad-CAM layer; ResNets match the standard layouts."""

import numpy as np
import pytest
import torch

from fatlib.core.config import ConfigError, MelConfig
from fatlib.core.frontend import Normalisation
from fatlib.core.models import available_models, build_model
from fatlib.core.models.cnn import FrameAttention
from fatlib.io.artifact import ModelMeta, load_model, save_artifact
from fatlib.report.figures import grad_cam

REGISTERED = available_models()


def test_the_registry_holds_the_resnets():
    assert {"resnet18", "resnet34"} <= set(REGISTERED)


@pytest.mark.parametrize("arch", REGISTERED)
@pytest.mark.parametrize("in_channels, frames", [(1, 32), (3, 128), (1, 311)])
def test_every_model_gives_logits_for_any_crop_length(arch, in_channels, frames):
    model = build_model(arch, 7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 128, frames))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert model.first_conv().in_channels == in_channels


@pytest.mark.parametrize("arch", REGISTERED)
def test_every_model_survives_the_artifact_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, 5, in_channels=3).eval()
    meta = ModelMeta(arch=arch, classes=list("abcde"), mel=MelConfig(), crop_frames=64,
                     normalisation=Normalisation("color"), recipe="default")
    save_artifact(str(tmp_path / "model"), meta, model.state_dict())
    loaded_meta, loaded = load_model(str(tmp_path / "model"))  # the tagger: frontend + network
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.network(x))
    assert loaded_meta.arch == arch and loaded_meta.in_channels == 3
    assert loaded.frontend.norm == Normalisation("color") and not loaded.training


@pytest.mark.parametrize("arch", REGISTERED)
def test_every_model_names_a_grad_cam_layer(arch):
    torch.manual_seed(0)
    model = build_model(arch, 4)
    cam = grad_cam(model, torch.randn(1, 1, 64, 48), class_index=2)
    assert cam.shape == (64, 48) and 0.0 <= cam.min() and cam.max() <= 1.0
    assert np.isfinite(cam).all() and model.training  # the model is left as it came

# torchvision's resnet18 / resnet34 (3 input channels, 1000 classes) hold 11,689,512 and
# 21,797,672 parameters; minus the 7x7 stem (3*64*49) and the head (512*1000 + 1000):
STANDARD_BODY = {"resnet18": 11_689_512 - 9_408 - 513_000, "resnet34": 21_797_672 - 9_408 - 513_000}


@pytest.mark.parametrize("arch", sorted(STANDARD_BODY))
@pytest.mark.parametrize("in_channels, n_classes", [(1, 80), (3, 10)])
def test_parameter_count_equals_standard_layout_apart_from_stem_and_head(
    arch, in_channels, n_classes
):
    model = build_model(arch, n_classes, in_channels=in_channels)
    stem = model.first_conv().weight.numel()
    head = sum(p.numel() for p in model.fc.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert stem == in_channels * 64 * 7 * 7
    assert head == 512 * n_classes + n_classes
    assert total - stem - head == STANDARD_BODY[arch]


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50", 10)


def test_learns_a_toy_multilabel_task():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 32, 32)
    y = (torch.rand(16, 4) < 0.4).float()
    for c in range(4):
        x[:, 0, 8 * c : 8 * c + 8] += 3 * y[:, c, None, None]
    model = build_model("resnet18", 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    first = loss_fn(model(x), y).item()
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_the_time_pooling_head_keeps_loud_short_events():
    from fatlib.core.models.resnet import TimePool

    x = torch.zeros(1, 2, 4, 10)
    x[0, 0, :, 3] = 8.0  # one loud frame in channel 0
    pooled = TimePool()(x)
    assert pooled.shape == (1, 2)
    torch.testing.assert_close(pooled, torch.tensor([[8.0 + 0.8, 0.0]]))


# PANNs' Cnn10 layout with one input channel: conv weights (1 -> 64 -> 128 -> 256 -> 512, two
# 3x3 convolutions a block) 4,682,304, their batch norms 3,840, fc1 512 x 512 + 512; PANNs'
# own (527 classes, plus a batch norm over 64 mel bins) totals 5.2 M.
CNN10_BODY = 4_682_304 + 3_840 + 262_656


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cnn10_has_the_panns_layout_and_size(in_channels):
    model = build_model("cnn10", 10, in_channels=in_channels)
    total = sum(p.numel() for p in model.parameters())
    assert total == CNN10_BODY + (in_channels - 1) * 64 * 9 + 512 * 10 + 10
    assert 4e6 <= total <= 6e6


@pytest.mark.parametrize("arch", ["cnn10", "cnn10-att"])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("frames", [64, 128, 301])
def test_cnn10_models_give_logits_for_any_crop_length(arch, in_channels, frames):
    model = build_model(arch, 11, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, frames))
    assert out.shape == (2, 11) and torch.isfinite(out).all()


def test_cnn10_refuses_crops_too_short_for_its_poolings():
    with pytest.raises(ConfigError, match="at least 16 mel bins and 16 frames, got 64 x 8"):
        build_model("cnn10", 3)(torch.zeros(2, 1, 64, 8))


def test_frame_attention_is_a_softmax_weighted_mean_of_frame_logits():
    head = FrameAttention(1, 2, dropout=0.0)
    with torch.no_grad():
        for layer, weight in [(head.hidden, [[[1.0]]]), (head.attention, [[[1.0]], [[0.0]]]),
                              (head.classes, [[[-2.0]], [[1.0]]])]:
            layer.weight.copy_(torch.tensor(weight))
            layer.bias.zero_()
    # (1, 1, freq 2, time 3): frame features (means over frequency) 1, 2, 3
    x = torch.tensor([[[[0.0, 2.0, 4.0], [2.0, 2.0, 2.0]]]])
    softmax = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    expected = [(softmax * [-2.0, -4.0, -6.0]).sum(), np.mean([1.0, 2.0, 3.0])]  # -5.15, 2.0
    torch.testing.assert_close(head(x), torch.tensor([expected], dtype=torch.float32))


@pytest.mark.parametrize("arch, head", [("cnn10-att", "head"), ("resnet18-att", "pool")])
def test_attention_models_output_the_attention_mean_of_their_frame_logits(arch, head):
    torch.manual_seed(0)
    model = build_model(arch, 4).eval()
    frames = {}
    for name in ("attention", "classes"):
        getattr(getattr(model, head), name).register_forward_hook(
            lambda _m, _i, out, name=name: frames.__setitem__(name, out))
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 96))
    assert frames["classes"].shape[:2] == (2, 4) and frames["classes"].shape[2] > 1
    expected = (frames["attention"].softmax(dim=2) * frames["classes"]).sum(dim=2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("arch", ["cnn10", "cnn10-att"])  # resnet18-att: its body as above
def test_cnn10_models_learn_a_fixed_batch(arch):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 32, 32)
    y = (torch.rand(8, 4) < 0.4).float()
    for c in range(4):
        x[:, 0, 8 * c : 8 * c + 8] += 3 * y[:, c, None, None]
    model = build_model(arch, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("arch", REGISTERED)
def test_every_model_scores_deterministically_in_eval_mode(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3).eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
