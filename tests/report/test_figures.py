"""Pictures: valid PNGs of the expected size; Grad-CAM maps with the crop's shape, not flat."""

import re
import struct

import numpy as np
import pytest
import torch

from fatlib.core.config import MelConfig
from fatlib.core.models import build_model
from fatlib.report.figures import (
    batch_grid_figure,
    curves_figure,
    filters_figure,
    grad_cam,
    grad_cam_figure,
    per_class_figure,
    save_png,
    spectrogram_figure,
)


def png_size(path):
    """(width, height) from a PNG's IHDR, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def trained():
    """A ResNet-18 that learned, in a few steps, which of 3 mel bands holds energy."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    x = torch.randn(24, 1, 32, 32) * 0.1
    y = torch.zeros(24, 3)
    for i in range(24):
        c = i % 3
        x[i, 0, 10 * c : 10 * c + 6] += 3.0
        y[i, c] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    return model.eval(), x


def test_grad_cam_has_the_crop_shape_and_is_not_constant(trained):
    model, x = trained
    cam = grad_cam(model, x[:1], 0)
    assert cam.shape == (32, 32)
    assert cam.min() == 0.0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.05
    # The model is left as it was: eval mode, no gradients kept.
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_every_figure_is_a_png_of_the_expected_size(trained, tmp_path):
    model, x = trained
    cfg = MelConfig()
    logmel = np.random.default_rng(0).normal(-40, 10, size=(128, 300)).astype(np.float32)
    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "lwlrap": 0.5 + e / 10,
                "lr": 1e-3} for e in range(1, 4)]
    cam = grad_cam(model, x[:1], 0)
    figures = {
        "spec.png": (spectrogram_figure(logmel, cfg, "clip"), (800, 350)),
        "batch.png": (batch_grid_figure([logmel[:, :128]] * 6, [["a"], ["b", "c"]] * 3),
                      (1200, 520)),
        "curves.png": (curves_figure(history, np.linspace(1e-4, 1e-3, 30)), (1400, 380)),
        "per_class.png": (per_class_figure(np.array([0.9, 0.2, 0.6]), np.array([0.5, 0.3, 0.2]),
                                           ["a", "b", "c"]), (800, 300)),
        "filters.png": (filters_figure(model), (880, 880)),
        "cam.png": (grad_cam_figure(x[0, 0].numpy(), [cam], ["a"], [0.9], "f.wav"), (680, 300)),
    }
    for name, (fig, size) in figures.items():
        save_png(fig, str(tmp_path / name))
        assert png_size(tmp_path / name) == size, name


def test_spectrogram_axis_is_in_hz():
    fig = spectrogram_figure(np.zeros((128, 64), dtype=np.float32), MelConfig())
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "1k" in labels and "8k" in labels
    assert re.search("Hz", fig.axes[0].get_ylabel())
