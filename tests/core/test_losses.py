"""Losses: per-clip BCE and softmax CE on logits equal torch's references; weights scale clips'
shares."""

import pytest
import torch

from fatlib.core.losses import clip_bce, clip_loss, clip_softmax_ce, weighted_loss


def test_clip_bce_is_the_mean_bce_of_each_clip_over_classes_and_crops():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3, 5), (torch.rand(4, 3, 5) > 0.5).float()
    reference = torch.stack([torch.nn.functional.binary_cross_entropy(
        torch.sigmoid(logits[i]), targets[i]) for i in range(4)])
    torch.testing.assert_close(clip_bce(logits, targets), reference)


def test_softmax_ce_is_torch_cross_entropy_against_labels_sharing_one_unit():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5)
    targets = torch.zeros(4, 3, 5)
    targets[..., 1] = 1.0
    targets[:2, :, 3] = 1.0  # two-label clips: each label gets half the probability
    reference = torch.stack([torch.nn.functional.cross_entropy(
        logits[i], targets[i] / targets[i].sum(-1, keepdim=True)) for i in range(4)])
    torch.testing.assert_close(clip_softmax_ce(logits, targets), reference)
    torch.testing.assert_close(clip_loss(logits[:, 0], targets[:, 0], "softmax"),
                               clip_softmax_ce(logits[:, 0], targets[:, 0]))


def test_softmax_ce_ranks_within_a_clip_and_ignores_clips_without_labels():
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    right, wrong = torch.tensor([[3.0, 0.0, 0.0]] * 2), torch.tensor([[0.0, 3.0, 0.0]] * 2)
    assert (clip_softmax_ce(right, targets)[0] < clip_softmax_ce(wrong, targets)[0]).item()
    # A shift of every class of a clip changes nothing: only the ranking within it counts.
    torch.testing.assert_close(clip_softmax_ce(right + 5.0, targets),
                               clip_softmax_ce(right, targets))
    assert clip_softmax_ce(right, targets)[1].item() == 0.0
    with pytest.raises(ValueError, match="unknown loss"):
        clip_loss(right, targets, "hinge")


def test_weights_make_noisy_clips_count_less():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for kind in ("bce", "softmax"):
        per_clip = clip_loss(logits, targets, kind)
        equal = weighted_loss(logits, targets, torch.ones(2), kind)
        torch.testing.assert_close(equal, per_clip.mean())
        half = weighted_loss(logits, targets, torch.tensor([1.0, 0.5]), kind)
        torch.testing.assert_close(half, (per_clip[0] + 0.5 * per_clip[1]) / 1.5)
