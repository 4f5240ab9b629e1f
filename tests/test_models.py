"""ResNets: the standard layouts' parameter counts, any crop length, learning on a toy task."""

import pytest
import torch

from fatlib.models import build_model

# torchvision's resnet18 / resnet34 (3 input channels, 1000 classes) hold 11,689,512 and
# 21,797,672 parameters; minus the 7x7 stem (3*64*49) and the head (512*1000 + 1000):
STANDARD_BODY = {"resnet18": 11_689_512 - 9_408 - 513_000, "resnet34": 21_797_672 - 9_408 - 513_000}


@pytest.mark.parametrize("arch", sorted(STANDARD_BODY))
@pytest.mark.parametrize("in_channels, n_classes", [(1, 80), (3, 10)])
def test_parameter_count_equals_standard_layout_apart_from_stem_and_head(
    arch, in_channels, n_classes
):
    model = build_model(arch, n_classes, in_channels=in_channels)
    stem = model.conv1.weight.numel()
    head = sum(p.numel() for p in model.fc.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert stem == in_channels * 64 * 7 * 7
    assert head == 512 * n_classes + n_classes
    assert total - stem - head == STANDARD_BODY[arch]


@pytest.mark.parametrize("frames", [32, 128, 311])
def test_any_crop_length_gives_logits(frames):
    model = build_model("resnet18", 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 128, frames))
    assert out.shape == (2, 7)


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
