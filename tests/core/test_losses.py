"""Losses: per-clip BCE on logits equals torch's reference; weights scale clips' shares."""

import torch

from fatlib.core.losses import clip_bce, weighted_bce


def test_clip_bce_is_the_mean_bce_of_each_clip_over_classes_and_crops():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3, 5), (torch.rand(4, 3, 5) > 0.5).float()
    reference = torch.stack([torch.nn.functional.binary_cross_entropy(
        torch.sigmoid(logits[i]), targets[i]) for i in range(4)])
    torch.testing.assert_close(clip_bce(logits, targets), reference)


def test_weights_make_noisy_clips_count_less():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_clip = clip_bce(logits, targets)
    equal = weighted_bce(logits, targets, torch.ones(2))
    torch.testing.assert_close(equal, per_clip.mean())
    half = weighted_bce(logits, targets, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(half, (per_clip[0] + 0.5 * per_clip[1]) / 1.5)
