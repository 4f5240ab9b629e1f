"""Polyphony made in training: crops of a batch mixed with other crops of it as sounds add.

Two sounds playing at once add their power, not their decibels: the mix of log-mels a and b (dB)
at a relative gain g (dB) is 10 log10(10^(a/10) + 10^((b + g)/10)). The partner is moved in time
by a random offset (circularly), so the two overlap anywhere, and the mix is labelled with the
union of both clips' labels: both are present. Works on the dB crops before normalisation, on
whatever device they are; the random numbers come from the numpy generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fatlib.core.augment import host_to

_LN10_10 = float(np.log(10.0) / 10.0)  # dB -> natural-log power: exp(x * ln10 / 10) = 10^(x/10)


@dataclass(frozen=True)
class SoundMix:
    """Each crop, with probability p, gets another crop of its batch added as a sound, at a
    relative gain ~ U(-max_gain_db, +max_gain_db) and a random time offset (overlap: an
    offset that puts the partner's sound inside the crop's); with sources > 2, a mixed crop
    gets a further one with probability p again, up to sources in all."""

    p: float = 0.5
    max_gain_db: float = 6.0
    overlap: bool = False
    sources: int = 2

    def __call__(self, db: torch.Tensor, stats: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                 rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch with its mixed crops: (db, stats, targets, weights)."""
        return sound_mix(db, stats, y, w, rng, self.p, self.max_gain_db, self.overlap,
                         self.sources)


def sound_mix(db: torch.Tensor, stats: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              rng: np.random.Generator, p: float, max_gain_db: float, overlap: bool = False,
              sources: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops db (B, n_mels, frames) in dB, some mixed with a partner of the batch as sounds add.

    The partner's time offset is uniform over the crop, or with overlap such that the centre
    of its sound (power-weighted) falls within one spread (power-weighted std over time) of
    the centre of the crop's own: short sounds padded into crops then play at once, as in
    a recording of two sources, instead of mostly one after the other. With sources > 2, each
    mixed crop gets another partner (a crop as it was before any mixing) with probability p,
    again for every further source.

    Returns float32 crops, stats (B, 4) = (mean, std, min, max) - a mixed row's are its clip's
    whole-clip stats moved as the mixing moved its crop's (`_mixed_stats`) -, targets
    (B, n_classes) with the union (elementwise max) of every mixed clip's targets on mixed rows,
    and loss weights (B,) with the lowest of them on mixed rows (a mix is as trustworthy as its
    noisiest part)."""
    batch = db.shape[0]
    mixed = rng.random(batch) < p
    draws = _partner_draws(db.shape, rng, max_gain_db, overlap)
    x, stats = db.float(), stats.float()
    if batch < 2 or not mixed.any():
        return x, stats, y, w
    # Partners are always the crops as they were: a mix of mixes would double-count sources.
    crops, labels, weights = x, y, w
    for more in range(sources - 1):
        if more > 0:  # drawn only beyond two sources, so two-source runs repeat as before
            mixed = mixed & (rng.random(batch) < p)
            draws = _partner_draws(db.shape, rng, max_gain_db, overlap)
            if not mixed.any():
                break
        x, stats, y, w = _add_partners(x, stats, y, w, crops, labels, weights, mixed, draws,
                                       overlap)
    return x, stats, y, w


def _partner_draws(shape: tuple[int, ...], rng: np.random.Generator, max_gain_db: float,
                   overlap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(partner row, gain dB, time draw) per row: another row of the batch, never the row
    itself; the time draw an offset in frames, or with overlap a jitter in [-1, 1]."""
    batch, _, frames = shape
    partner = (np.arange(batch) + rng.integers(1, max(batch, 2), size=batch)) % batch
    gain = rng.uniform(-max_gain_db, max_gain_db, batch)
    # The default's draw stays as it was, so its runs repeat; overlap draws a jitter instead.
    draw = rng.uniform(-1.0, 1.0, batch) if overlap else rng.integers(0, frames, batch)
    return partner, gain, draw


def _add_partners(x: torch.Tensor, stats: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                  crops: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  mixed: np.ndarray, draws: tuple[np.ndarray, np.ndarray, np.ndarray],
                  overlap: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x's mixed rows with their partner crops (of crops, labels, weights) added as sounds."""
    partner, gain, draw = draws
    frames = x.shape[2]
    rows = host_to(np.flatnonzero(mixed), x.device)
    others = host_to(partner[mixed], x.device)
    if overlap:
        centre, spread = sound_centres(x[rows])
        other_centre, _ = sound_centres(crops[others])
        jitter = host_to(draw[mixed].astype(np.float32), x.device)
        offset = torch.round(centre - other_centre + jitter * spread).long()
    else:
        offset = host_to(draw[mixed], x.device)
    # Partner frame t comes from frame (t - offset) mod frames: a circular shift per row.
    time = (torch.arange(frames, device=x.device)[None, :] - offset[:, None]) % frames
    shifted = crops[others].gather(2, time[:, None, :].expand(-1, x.shape[1], -1))
    shifted = shifted + host_to(gain[mixed].astype(np.float32), x.device)[:, None, None]
    # log-add-exp in the natural-log power domain is exact and never overflows in float32.
    x_rows = x[rows]
    mix = torch.logaddexp(x_rows * _LN10_10, shifted * _LN10_10) / _LN10_10
    x = x.index_copy(0, rows, mix)
    stats = stats.index_copy(0, rows, _mixed_stats(stats[rows], x_rows, mix))
    y = y.index_copy(0, rows, torch.maximum(y[rows], labels[others]))
    w = w.index_copy(0, rows, torch.minimum(w[rows], weights[others]))
    return x, stats, y, w


def sound_centres(db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each crop's sound is in time: the power-weighted mean frame and the
    power-weighted std of frames, (B,) each, of crops (B, n_mels, frames) in dB (silence: the
    middle, and the spread of uniform weights)."""
    level = torch.logsumexp(db.float() * _LN10_10, dim=1)  # (B, frames): ln of frame power
    weights = torch.softmax(level, dim=1)
    t = torch.arange(db.shape[2], device=db.device, dtype=torch.float32)
    centre = (weights * t).sum(1)
    spread = (weights * (t[None, :] - centre[:, None]) ** 2).sum(1).sqrt()
    return centre, spread


def _mixed_stats(whole: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Whole-clip stats (R, 4) of mixed rows: the clip's own, moved by what mixing did to its
    crop (mean, min and max shifted by the crop's change, std scaled by its ratio).

    Not the mixed crop's own stats: every other crop, and every crop at inference, is
    normalised with its whole clip's, and a mix normalised with its own would stand out (always
    the full range, under per-clip standardisation exactly mean 0 and std 1)."""
    old, new = crop_stats(before), crop_stats(after)
    shift = new - old
    # A crop with no spread (silence) gives no ratio: the mix's own spread stands in.
    std = torch.where(old[:, 1] > 1e-3, whole[:, 1] * new[:, 1] / old[:, 1].clamp_min(1e-3),
                      new[:, 1])
    return torch.stack([whole[:, 0] + shift[:, 0], std,
                        whole[:, 2] + shift[:, 2], whole[:, 3] + shift[:, 3]], 1)


def crop_stats(db: torch.Tensor) -> torch.Tensor:
    """(B, 4) = (mean, std, min, max) of each crop (B, n_mels, frames), the layout of the
    stored whole-clip stats (population std)."""
    flat = db.reshape(db.shape[0], -1)
    return torch.stack([flat.mean(1), flat.std(1, correction=0), flat.amin(1), flat.amax(1)], 1)
