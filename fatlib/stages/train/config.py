"""The training stage's settings and result (no torch or Ray here: jobs import it first)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

from fatlib.core.bounds import check_bounds, seed_recipe_offences, seed_recipe_values
from fatlib.core.cli import option
from fatlib.core.config import NORMALISATIONS, PADDINGS, ConfigError, MelConfig
from fatlib.core.errors import UserError
from fatlib.stages import cluster_options

RECIPES = ("default", "seed")
DEFAULT_NOISY_SMOOTHING = 0.2  # the default recipe's soft targets for noisy clips
# The default recipe's augmentations: at 30 epochs they beat the seed recipe on fsdd-poly
# (overlapping digits of unseen speakers) and on fsdd-fat (BENCHMARKS.md, issue 26).
DEFAULT_SOUND_MIX = 0.5
DEFAULT_FREQ_SHIFT = 4
# Ray's smallest fraction of a resource: it refuses a finer one, once the workers are placed.
RAY_RESOURCE_UNIT = 1e-4


class RunDirError(UserError):
    """The run directory is in a state the request does not fit (exists / nothing to resume)."""


def parse_fold(text: str) -> tuple[int, int]:
    """'k/K' -> (k, K), with 0 <= k < K and K >= 2."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fold wants k/K, e.g. 0/5 (got {text!r})") from None
    if n < 2 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--fold k/K needs 0 <= k < K and K >= 2 (got {text!r})")
    return k, n


@dataclass(frozen=True)
class TrainConfig:
    """Inputs of the training stage; defaults are the seed recipe's budget and crop."""

    features: str = option(help="feature store: a directory or s3://...")
    out: str = option(help="run directory: a directory or s3://...")
    workers: int = option(2, "Ray Train workers (DDP)", minimum=1)
    gpus_per_worker: float = option(0.0, "GPUs per worker (0: train on CPUs)", minimum=0)
    cpus_per_worker: float | None = option(None, "CPUs per worker", minimum=RAY_RESOURCE_UNIT,
                                           default_text="the cluster's CPUs shared among workers")
    epochs: int = option(5, "training epochs", minimum=1)
    lr: float = option(3e-3, "maximum LR of the one-cycle schedule", above=0)
    weight_decay: float = option(1e-2, "AdamW weight decay", minimum=0)
    batch_size: int = option(64, "global batch size; each worker takes batch size / workers",
                             minimum=1)
    crop_frames: int = option(128, "random crop length in frames (the seed's 128 = 2 s)", minimum=8)
    fold: int = option(0, "validation fold k of K stratified folds of train_curated",
                       parse=parse_fold, render=lambda v: f"{v[0]}/{v[1]}",
                       sets=("fold", "n_folds"), metavar="k/K", minimum=0,
                       # train.py's, which leaves it unset until given (self-training's K)
                       default_text="0/5; self-training 2 folds; given, one model unless "
                                    "--self-train")
    n_folds: int = option(5, cli=False, minimum=2)  # set by --fold k/K
    folds: str = option("one", "'all': train all K folds of --fold k/K as concurrent runs under "
                        "<out>/fold-<k>/, report the out-of-fold lwlrap, write the ensemble",
                        choices=("one", "all"))
    # Off: mixed in (with soft targets) the noisy split won at 10 epochs on fsdd-fat, but
    # beside sound mixing it lost on fsdd-poly's unseen speakers (BENCHMARKS.md, issue 26).
    noisy: str | None = option(None, "'mix' adds train_noisy to the training batches, "
                               "'warmup' trains on it alone for the first --noisy-warmup "
                               "epochs, then on the curated fold (FAT2019's 2nd place), 'off' "
                               "leaves it out", choices=("off", "mix", "warmup"),
                               default_text="off; mix with --noisy-labels")
    noisy_warmup: int = option(5, "with --noisy warmup: epochs on train_noisy alone (each one "
                               "pass over it) before the curated epochs", minimum=1,
                               metavar="EPOCHS")
    noisy_labels: str | None = option(None, "CSV (fname,labels) that replaces train_noisy's "
                                      "labels; noisy clips it does not list are left out",
                                      metavar="CSV")
    noisy_weight: float = option(0.5, "loss weight of a noisy clip relative to a curated one",
                                 minimum=0)
    noisy_smoothing: float | None = option(None, "soft targets for noisy clips only: t -> "
                                           "t (1 - s) + s / 2 (0: off)", minimum=0, maximum=1,
                                           default_text="0.2; 0 with --recipe seed",
                                           seed_recipe=0.0)
    mixup: float = option(0.0, "mixup alpha, Beta(alpha, alpha); 0 = off", minimum=0,
                          seed_recipe=0.0)
    specaugment: bool = option(False, "SpecAugment: two frequency and two time masks per crop",
                               seed_recipe=False)
    sound_mix: float | None = option(None, "probability that a training crop gets another crop "
                                     "of its batch added as a sound (power domain, random gain "
                                     "and time offset), labelled with both clips' labels (0: "
                                     "off)", minimum=0, maximum=1, metavar="P",
                                     default_text=f"{DEFAULT_SOUND_MIX}; 0 with --recipe seed",
                                     seed_recipe=0.0)
    sound_mix_gain: float = option(6.0, "the added crop's level relative to the crop's, drawn "
                                   "from +-this many dB", minimum=0, metavar="DB")
    sound_mix_overlap: bool = option(False, "the added crop's sound placed over the crop's own "
                                     "(power-weighted centres within one spread) instead of "
                                     "anywhere in the crop", seed_recipe=False)
    sound_mix_sources: int = option(2, "the most sources a mixed crop holds: past the "
                                    "second, each is added with probability --sound-mix again",
                                    minimum=2, metavar="N")
    freq_shift: int | None = option(None, "move each crop up or down the mel axis by up to "
                                    "this many bins, at random (speaker and pitch variation; "
                                    "0: off)", minimum=0, metavar="BINS",
                                    default_text=f"{DEFAULT_FREQ_SHIFT}; 0 with --recipe seed",
                                    seed_recipe=0)
    shift_sources: bool = option(False, "with --freq-shift and --sound-mix: each crop shifted "
                                 "before the mixing, so a mix holds two sources shifted apart "
                                 "(two voices), instead of the mix shifted as one",
                                 seed_recipe=False)
    ema: float = option(0.0, "validate and export an exponential moving average of the weights "
                        "spanning about this many epochs of steps (0: off)", minimum=0,
                        metavar="EPOCHS", seed_recipe=0.0)
    arch: str = option("resnet18", "architecture from the model registry: resnet18, resnet34, "
                       "and their -timepool variants (a head that keeps time structure); cnn10 "
                       "(PANNs' 5 M-parameter CNN, for small data; crops of >= 16 frames); "
                       "cnn10-att and resnet18-att (frame attention, for overlapping sounds)")
    # Silence, as the seed: repeating a clip's audible part (wrap) lost on fsdd-fat's held-out
    # speaker (2 seeds, -0.046; BENCHMARKS.md, session 8).
    pad: str = option("silence", "short clips in training crops: padded with their silence "
                      "floor, their audible part repeated (wrap), or either at random per "
                      "sample", choices=PADDINGS, seed_recipe="silence")
    resized_crop: float = option(0.0, "random resized crops in time: a crop spans crop x "
                                 "U(1 - r, 1 + r) frames, stretched to crop (0: off)",
                                 minimum=0, below=1, metavar="r", seed_recipe=0.0)
    deltas: bool = option(False, "3 informative channels (log-mel, delta, delta-delta) instead "
                          "of copies", seed_recipe=False)
    centre_bands: bool = option(False, "subtract each crop's mean per mel bin over time (a "
                                "per-window cepstral mean normalisation: removes a speaker's "
                                "or microphone's fixed spectral colouring)", seed_recipe=False)
    recipe: str = option("default", "'seed': the seed kernel's 3-channel per-clip uint8 input",
                         choices=RECIPES)
    # "color" (the seed's per-clip uint8 mapping) won on fsdd-fat's held-out speaker
    # (BENCHMARKS.md), so it is the default input.
    normalisation: str = option("color", "input scaling: the seed's per-clip uint8 colour mapping "
                                "(3 channels), per-clip standardisation, or the training set's "
                                "dB statistics", choices=NORMALISATIONS)
    valid_crops: int = option(3, "evenly spaced windows per validation clip, sigmoids averaged",
                              minimum=1)
    resume: bool = option(False, "continue the run in --out")
    # numpy's generators refuse a negative seed (inside every worker, after Ray started).
    # Tune's search seeds numpy's legacy RandomState with it: < 2**32.
    seed: int = option(0, "seed of folds, initialisation, crops and augmentations", minimum=0,
                       maximum=2**32 - 1)
    keep_checkpoints: int = option(2, "checkpoints kept: the best by lwlrap (plus the latest)",
                                   minimum=1)
    wait_for_resources: float = cluster_options.wait_for_resources("the workers' resources")
    max_failures: int = option(3, "worker-group restarts from the latest checkpoint", minimum=0)
    mel: MelConfig = option(default_factory=MelConfig, cli=False)
    # Fault drill: one worker dies once after this epoch (tests and drills set it).
    fail_after_epoch: int | None = option(None, cli=False)

    def check(self) -> None:
        """ConfigError naming the first invalid value."""
        from fatlib.core.models import available_models  # torch: only once flags are parsed
        from fatlib.core.models.cnn import MIN_SIZE

        # One field's bounds and choices are its option()'s, checked as its flag parses too,
        # and what the seed recipe forbids is marked on each field (option(seed_recipe=));
        # here only what a declaration cannot say: rules over several fields, and the model
        # registry (it needs torch, which config.py may not import).
        check_bounds(self)
        models = available_models()
        offences = seed_recipe_offences(self) if self.recipe == "seed" else []
        checks = [
            (self.batch_size >= self.workers, "batch size must be >= the number of workers"),
            (self.fold < self.n_folds, f"--fold k/K needs k < K (got {self.fold}/{self.n_folds})"),
            (self.arch in models, f"arch must be one of {models}"),
            (not offences, f"--recipe seed has no {', '.join(offences)} (it is the seed "
             "kernel's recipe)"),
            (not self.deltas or self.crop_frames >= 9, "deltas need crops of >= 9 frames"),
            (not self.shift_sources or self.freq_shift != 0,
             "--shift-sources shifts each source by --freq-shift: it needs --freq-shift > 0"),
            (self.freq_shift is None or self.freq_shift < self.mel.n_mels,
             f"--freq-shift must be below the {self.mel.n_mels} mel bins, got {self.freq_shift}"),
            (not self.arch.startswith("cnn10") or min(self.crop_frames, self.mel.n_mels) >=
             MIN_SIZE, f"the cnn10 models need crops of >= {MIN_SIZE} frames and mel bins"),
            (self.noisy != "warmup" or self.noisy_warmup < self.epochs,
             "--noisy-warmup must leave at least one curated epoch (< --epochs)"),
            (self.noisy_labels is None or self.noisy != "off",
             "--noisy-labels relabels train_noisy: it needs --noisy mix or warmup"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def smoothing(self) -> float:
        """Label smoothing of the noisy clips' targets: --noisy-smoothing, else the recipe's."""
        if self.noisy_smoothing is not None:
            return self.noisy_smoothing
        return 0.0 if self.recipe == "seed" else DEFAULT_NOISY_SMOOTHING

    def with_recipe(self, store_has_noisy: bool) -> TrainConfig:
        """The config with every setting the recipe decides (--noisy, --sound-mix,
        --freq-shift) set: the recipe's value for this store where unset; ConfigError when
        --noisy asks for a split the store lacks."""
        seed = self.recipe == "seed"
        # Relabelled noisy clips (--noisy-labels) were asked for: mixed in.
        noisy = self.noisy or ("mix" if self.noisy_labels is not None else "off")
        if noisy in ("mix", "warmup") and not store_has_noisy:
            raise ConfigError(f"{self.features}: --noisy {noisy} needs train_noisy, and this "
                              "feature store has none (preprocess it, or --noisy off)")
        return replace(
            self, noisy=noisy,
            sound_mix=_unset_to(self.sound_mix, 0.0 if seed else DEFAULT_SOUND_MIX),
            freq_shift=_unset_to(self.freq_shift, 0 if seed else DEFAULT_FREQ_SHIFT))

    @classmethod
    def from_record(cls, recorded: dict, **overrides) -> TrainConfig:
        """The config of a run's recorded settings (metrics.json's "config"); a setting the
        record lacks predates the run, so the run had it off (its seed-recipe value)."""
        known = {k: v for k, v in recorded.items() if k in cls.__dataclass_fields__}
        return cls(**{"features": "", "out": "", **seed_recipe_values(cls), **known, **overrides})

    def augmentations(self) -> list[tuple[str, dict]]:
        """The batch augmentations this config asks for, by name (fatlib.core.augment)."""
        steps: list[tuple[str, dict]] = []
        if self.mixup > 0:
            steps.append(("mixup", {"alpha": self.mixup}))
        if self.specaugment:
            steps.append(("specaugment", {}))
        if self.freq_shift > 0 and not self.shift_sources:
            steps.append(("frequency_shift", {"max_bins": self.freq_shift}))
        return steps


def _unset_to(value, default):
    """value, or default where it is None (a flag left unset)."""
    return default if value is None else value


def steps_per_epoch(n_train: int, batch_size: int, workers: int) -> int:
    """Optimizer steps per epoch: each worker's share of the rows in per-worker batches."""
    return math.ceil((n_train // workers) / (batch_size // workers))


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: str
    artifact: str
    best_epoch: int
    best_lwlrap: float
    history: list[dict]

    def table(self) -> str:
        """The per-epoch history as fastai prints it."""
        return format_history(self.history)

    def summary(self) -> str:
        """The table, the best epoch and where the model is."""
        return "\n".join([self.table(), f"best epoch {self.best_epoch}: lwlrap "
                                         f"{self.best_lwlrap:.4f}; model: {self.artifact}"])


def format_history(history: list[dict], header: bool = True, last_only: bool = False) -> str:
    """fastai's table: epoch, train_loss, valid_loss, lwlrap, time."""
    lines = [f"{'epoch':>5}  {'train_loss':>10}  {'valid_loss':>10}  {'lwlrap':>8}  {'time':>6}"]
    rows = history[-1:] if last_only else history
    for h in rows:
        minutes, seconds = divmod(int(round(h["time"])), 60)
        lines.append(f"{h['epoch']:>5}  {h['train_loss']:>10.6f}  {h['valid_loss']:>10.6f}  "
                     f"{h['lwlrap']:>8.6f}  {minutes:02d}:{seconds:02d}")
    return "\n".join(lines if header else lines[1:])
