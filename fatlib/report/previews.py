"""Spectrogram previews of a fresh feature store: a first look at new data."""

from __future__ import annotations

import numpy as np

from fatlib.core.config import MelConfig
from fatlib.core.features import decode_logmel
from fatlib.io import storage
from fatlib.io.feature_store import FeatureStore
from fatlib.report.figures import save_png, spectrogram_figure


def write_previews(out: str, splits: list[str], count: int, mel: MelConfig) -> list[str]:
    """Spectrogram PNGs of the first `count` clips of each split, under <out>/preview/."""
    store, written = FeatureStore.open(out, mel), []
    for split in splits:
        table = store.table(split).slice(0, count)
        for row in table.to_pylist():
            logmel = decode_logmel(row["logmel"], mel.n_mels, row["n_frames"]).astype(np.float32)
            title = f"{split}/{row['fname']}" + (f": {', '.join(row['labels'])}"
                                                  if row["labels"] else "")
            uri = storage.join(out, "preview", f"{split}_{row['fname']}.png")
            save_png(spectrogram_figure(logmel, mel, title), uri)
            written.append(uri)
    return written
