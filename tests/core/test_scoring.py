"""TTA scoring: crop windows through the network, combined per clip."""

import numpy as np
import pytest
import torch

from fatlib.core.inputs import Normalisation
from fatlib.core.models import build_model
from fatlib.core.scoring import combine, tta_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 5).eval()


def test_tta_logits_shape_and_single_centred_crop(model):
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(128, n)).astype(np.float32) for n in (300, 128, 90)]
    norm = Normalisation("global")
    logits = tta_logits(model, clips, norm, 64, 3, torch.device("cpu"))
    assert logits.shape == (3, 3, 5)
    one = tta_logits(model, clips[:1], norm, 64, 1, torch.device("cpu"))
    with torch.no_grad():
        centred = model(torch.from_numpy(clips[0][None, None, :, 118:182].copy()))
    torch.testing.assert_close(one[0, 0], centred[0], rtol=1e-4, atol=1e-4)


def test_colour_models_get_three_identical_channels(model):
    net = build_model("resnet18", 5, in_channels=3).eval()
    clip = np.random.default_rng(1).normal(-40, 10, size=(128, 200)).astype(np.float32)
    norm = Normalisation("color")
    logits = tta_logits(net, [norm.clip(clip)], norm, 128, 2, torch.device("cpu"))
    assert logits.shape == (1, 2, 5)


def test_combinations():
    logits = torch.tensor([[[0.0, 2.0], [2.0, -2.0]]])
    sig = torch.sigmoid(logits)
    np.testing.assert_allclose(combine(logits, "mean_sigmoid"), sig.mean(1).numpy())
    np.testing.assert_allclose(combine(logits, "max_sigmoid"), sig.amax(1).numpy())
    np.testing.assert_allclose(combine(logits, "mean_logit"), torch.sigmoid(logits.mean(1)))
    with pytest.raises(ValueError, match="unknown combination"):
        combine(logits, "median")
