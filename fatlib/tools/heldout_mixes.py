"""A test split of overlapping pairs made from a training run's held-out curated clips: how well
a model hears two sounds at once in sources it was trained on, apart from unseen sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from fatlib.core.audio import decode, resample
from fatlib.core.errors import UserError
from fatlib.io import storage
from fatlib.io.dataset import SUBMISSION_CSV, TRUTH_CSV, class_vocabulary, read_split
from fatlib.stages.train.checkpoints import OOF, read_oof
from fatlib.tools.synth import write_labels_csv, write_submission_template

# fsdd-poly's test recipe (its README): each part at an RMS of 0.5-1.0 x -20 dBFS, so two parts
# are within 6 dB of each other; the shorter part starts at a random offset inside the longer.
LEVEL_RMS = 0.1
MIN_GAIN = 0.5
RECIPE = "mixes.csv"  # which clips, gains and offset made each test clip


class MixesError(UserError):
    """A run or folder the held-out mixes cannot be made from or into."""


@dataclass(frozen=True)
class HeldoutMixes:
    """What build_heldout_mixes wrote."""

    out: str
    run: str
    singles: int
    pairs: int

    def format(self) -> str:
        """The summary and the two commands that score a model on the new split."""
        return "\n".join([
            f"{self.out}: {self.singles} held-out clips of {self.run} alone and {self.pairs} "
            f"overlapping pairs of them (test_truth.csv; recipe in {RECIPE})",
            f"next: python jobs/preprocess.py --data {self.out} --out <features> --splits test",
            f"      python jobs/benchmark.py tta --model {self.run}/model --features <features> "
            f"--truth {self.out}/test_truth.csv"])


def overlap(longer: np.ndarray, shorter: np.ndarray, offset: int) -> np.ndarray:
    """The two waveforms summed, the shorter starting `offset` samples into the longer."""
    if len(shorter) > len(longer) or not 0 <= offset <= len(longer) - len(shorter):
        raise ValueError(f"a {len(shorter)}-sample part does not fit {offset} samples into "
                         f"a {len(longer)}-sample one")
    mixed = longer.astype(np.float32, copy=True)
    mixed[offset:offset + len(shorter)] += shorter
    return mixed


def at_level(y: np.ndarray, gain: float) -> np.ndarray:
    """The waveform scaled to an RMS of gain x LEVEL_RMS (silence stays silence)."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return (y * (gain * LEVEL_RMS / rms)).astype(np.float32) if rms > 0 else y


def build_heldout_mixes(data: str, run: str, out: str, pairs: int = 240,
                        seed: int = 0) -> HeldoutMixes:
    """Write <out>/test (every clip of the run's validation fold alone, then `pairs` overlapping
    pairs of them with no label in common), test_truth.csv, sample_submission.csv and the
    recipe, in the dataset layout jobs/preprocess.py reads."""
    if not storage.is_file(storage.join(run, OOF)):
        raise MixesError(
            f"{run}: no {OOF}; give one training run (a fold of a K-fold run, e.g. "
            f"<out>/fold-0): its validation clips are the held-out ones, while a K-fold "
            f"ensemble has trained on every curated clip")
    if storage.is_remote(out):
        raise MixesError(f"{out}: write the split to a local folder (preprocess reads it from "
                         f"there or from wherever you copy it)")
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise MixesError(f"{out} is not empty: choose a new folder")
    classes = class_vocabulary(data)
    curated = {c.fname: c for c in read_split(data, "train_curated", classes)}
    held = sorted(read_oof(run).fname)
    missing = [f for f in held if f not in curated]
    if missing:
        raise MixesError(f"{run} validated on {missing[0]}, which {data}'s train_curated does "
                         f"not hold: give the dataset the run's feature store was made from")
    rng = np.random.default_rng(seed)

    def audio(fname: str) -> tuple[np.ndarray, int]:  # read when used: memory stays 2 clips
        return decode(storage.read_bytes(curated[fname].uri), name=fname)

    (root / "test").mkdir(parents=True)
    truth, recipe = [], []
    for i, f in enumerate(held):
        y, sr = audio(f)
        gain = rng.uniform(MIN_GAIN, 1.0)
        name = f"single-{i:05d}.wav"
        sf.write(root / "test" / name, at_level(y, gain), sr, subtype="FLOAT")
        truth.append((name, curated[f].labels))
        recipe.append((name, f, f"{gain:.9g}", "", "", ""))
    for i in range(pairs):
        a, b = _disjoint_pair(held, curated, rng)
        (ya, sr), (yb, sr_b) = audio(a), audio(b)
        yb = resample(yb, sr_b, sr) if sr_b != sr else yb
        gains = rng.uniform(MIN_GAIN, 1.0, size=2)
        parts = [(a, at_level(ya, gains[0]), gains[0]), (b, at_level(yb, gains[1]), gains[1])]
        parts.sort(key=lambda p: -len(p[1]))  # the longer first: the shorter goes inside it
        offset = int(rng.integers(0, len(parts[0][1]) - len(parts[1][1]) + 1))
        name = f"pair-{i:05d}.wav"
        sf.write(root / "test" / name, overlap(parts[0][1], parts[1][1], offset), sr,
                 subtype="FLOAT")
        truth.append((name, tuple(sorted({*curated[a].labels, *curated[b].labels}))))
        recipe.append((name, parts[0][0], f"{parts[0][2]:.9g}", parts[1][0],
                       f"{parts[1][2]:.9g}", str(offset)))
    write_labels_csv(root / TRUTH_CSV, [(name, list(labels)) for name, labels in truth])
    write_submission_template(root / SUBMISSION_CSV, [name for name, _ in truth], classes)
    pd.DataFrame(recipe, columns=["fname", "source", "gain", "inside", "inside_gain",
                                  "offset_samples"]).to_csv(root / RECIPE, index=False)
    return HeldoutMixes(out=out, run=run, singles=len(held), pairs=pairs)


def _disjoint_pair(held: list[str], curated: dict, rng: np.random.Generator) -> tuple[str, str]:
    """Two different held-out clips with no label in common, drawn at random."""
    if len(held) < 2:
        raise MixesError(f"the run held out {len(held)} clip: pairs need two or more")
    for _ in range(1000):
        a, b = rng.choice(len(held), size=2, replace=False)
        if not set(curated[held[a]].labels) & set(curated[held[b]].labels):
            return held[a], held[b]
    raise MixesError("the run's held-out clips share labels too often to draw pairs of "
                     "different sounds")

