"""The run report: every picture of a training run in PNGs and one report.html in the run dir.

Rebuilds the run's validation fold from its recorded settings, reads the run's own validation
scores (oof.parquet), and draws the batch grid, spectrograms, curves, per-class lwlrap, filters
and Grad-CAMs (the exported model on a few clips); the page lists every recorded setting.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from fatlib.core.cli import field_flags
from fatlib.core.features import decode_logmel
from fatlib.core.inputs import batch_stats, crop_rows, training_batch
from fatlib.core.labels import multi_hot
from fatlib.core.metrics import per_class_lwlrap
from fatlib.io import storage
from fatlib.io.artifact import load_model
from fatlib.io.feature_rows import feature_columns
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
from fatlib.stages.train.checkpoints import OOF, read_oof
from fatlib.stages.train.config import TrainConfig
from fatlib.stages.train.inputs import input_spec, training_inputs
from fatlib.stages.train.run_dir import RESUMABLE

REPORT = "report.html"


@dataclass
class Report:
    """Where the report went and the PNGs it shows."""

    html: str
    pictures: list[str]


def write_report(run: str, features: str | None = None, n_clips: int = 4) -> Report:
    """Draw the run's pictures into <run>/ and write <run>/report.html that shows them."""
    run = storage.absolute(run)
    features = storage.absolute(features) if features else None
    meta, model = load_model(storage.join(run, "model"))
    metrics = storage.read_json(storage.join(run, "metrics.json"))
    history = pd.read_csv(io.BytesIO(storage.read_bytes(storage.join(run, "history.csv"))))
    cfg = TrainConfig.from_record(metrics["config"], mel=meta.mel, out=run,
                                  features=features or metrics["config"]["features"])
    inputs = training_inputs(cfg)
    rows = inputs.store.table("train_curated").to_pylist()
    valid = [r for r in rows if r["fname"] in inputs.valid_names]
    train_rows = [r for r in rows if r["fname"] not in inputs.valid_names]
    pictures: list[tuple[str, str]] = []  # (file name, caption)

    def put(fig, name: str, caption: str) -> None:
        save_png(fig, storage.join(run, name))
        pictures.append((name, caption))

    put(_batch_figure(train_rows[:8], cfg, inputs), "batch.png",
        "A training batch: random crops as the network sees them, with their labels")
    for i, row in enumerate(valid[:2]):
        logmel = decode_logmel(row["logmel"], meta.mel.n_mels, row["n_frames"]).astype(np.float32)
        put(spectrogram_figure(logmel, meta.mel, f"{row['fname']}: {', '.join(row['labels'])}"),
            f"spectrogram_{i}.png", f"Log-mel of validation clip {row['fname']}")
    put(curves_figure(history.to_dict("records"), _lr_schedule(cfg, metrics)), "curves.png",
        "Loss, validation lwlrap and the one-cycle learning rate")
    scores = _validation_scores(run, meta.classes)  # fname -> the run's own scores
    if scores:
        labels = {r["fname"]: r["labels"] for r in rows}
        names = [n for n in scores if n in labels]  # all, unless --features is another store
        truth = multi_hot([labels[n] for n in names], meta.classes, names=names)
        per_class, weights = per_class_lwlrap(truth, np.stack([scores[n] for n in names]))
        put(per_class_figure(per_class, weights, meta.classes), "per_class.png",
            "Per-class lwlrap of the run's validation scores at its best epoch, worst first "
            "(w = class weight)")
    put(filters_figure(model.network), "filters.png", "First convolution layer's filters")
    shown = [r for r in valid if r["fname"] in scores][:n_clips]
    stats = batch_stats(_columns(shown), meta.mel.n_mels) if shown else None
    for i, row in enumerate(shown):
        fig = _grad_cam_figure(model, meta, row, stats[i], scores[row["fname"]])
        put(fig, f"gradcam_{i}.png", f"Grad-CAM for each true label of {row['fname']}")
    unscored = (("per-class lwlrap, Grad-CAM", f"not drawn: the run has no {OOF} (its "
                 "checkpoints predate validation scores)"),)
    page = _html(run, metrics, pictures, notes=() if scores else unscored)
    storage.write_bytes(storage.join(run, REPORT), page.encode())
    return Report(html=storage.join(run, REPORT), pictures=[p for p, _ in pictures])


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Feature rows as the column batch the training and scoring code takes (weight 1)."""
    return feature_columns(pa.Table.from_pylist(rows))


def _batch_figure(rows: list[dict], cfg: TrainConfig, inputs):
    """show_batch: the training stage's own batch preparation on a few clips."""
    x, y, _ = training_batch(_columns(rows), input_spec(cfg, inputs.norm), inputs.classes,
                             np.random.default_rng(cfg.seed))
    labels = [[inputs.classes[j] for j in np.flatnonzero(row > 0.5)] for row in y.numpy()]
    return batch_grid_figure([crop[0] for crop in x.numpy()], labels)


def _grad_cam_figure(model, meta, row, stats, scores):
    """Grad-CAM of each true label on the clip's centred crop (model: the artifact's Tagger,
    its frontend's normalised crop shown, its network's layer weighed)."""
    start = (row["n_frames"] - meta.crop_frames) // 2
    db = crop_rows([row["logmel"]], [row["n_frames"]], [start], meta.mel.n_mels,
                   meta.crop_frames, [stats[2]])
    crop = model.frontend.normalise(torch.from_numpy(db), torch.from_numpy(stats[None]))
    x = model.frontend.stack(crop).contiguous()
    crop = crop[0, 0].numpy()
    labels = list(row["labels"])
    cams = [grad_cam(model.network, x, meta.classes.index(label)) for label in labels]
    label_scores = [float(scores[meta.classes.index(label)]) for label in labels]
    return grad_cam_figure(crop, cams, labels, label_scores, row["fname"])


def _lr_schedule(cfg: TrainConfig, metrics: dict) -> np.ndarray:
    """The one-cycle LR at every step of the run, replayed from its settings."""
    steps = int(metrics.get("steps_per_epoch", 0)) * cfg.epochs
    if steps < 2:
        return np.array([])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        if schedule.last_epoch < steps - 1:
            schedule.step()
    return np.array(lrs)


def _validation_scores(run: str, classes: list[str]) -> dict[str, np.ndarray]:
    """The run's best epoch's validation scores (oof.parquet: the exported model's), per clip
    (n_classes,) in vocabulary order; {} for a run whose checkpoints predate them."""
    if not storage.exists(storage.join(run, OOF)):
        return {}
    oof = read_oof(run)
    return dict(zip(oof["fname"], oof[classes].to_numpy(np.float64), strict=True))


def _facts(run: str, metrics: dict, notes: tuple[tuple[str, str], ...] = ()
           ) -> list[tuple[str, str, str]]:
    """(label, value, explanation) rows of a run's report: its headline numbers and notes,
    then every setting it recorded, labelled with its flag (explained by the flag's help),
    leaving out where and how it executed (run_dir.RESUMABLE)."""
    cfg = TrainConfig.from_record(metrics.get("config", {}))
    rows = [("run", run, ""), ("best epoch", str(metrics.get("best_epoch")), ""),
            ("validation lwlrap (best epoch)", f"{metrics.get('lwlrap', float('nan')):.4f}", "")]
    rows += [(label, value, "") for label, value in notes]
    rows += [(flag.flag, flag.shown(flag.value(cfg)), flag.meta["help"])
             for flag in field_flags(TrainConfig).values() if flag.name not in RESUMABLE]
    return rows


def _html(run: str, metrics: dict, pictures: list[tuple[str, str]],
          notes: tuple[tuple[str, str], ...] = ()) -> str:
    """A single page, no external resources: the run's headline numbers and settings, and
    every picture."""
    rows = "\n".join(f'<tr><th title="{html.escape(note)}">{html.escape(label)}</th>'
                     f"<td>{html.escape(value)}</td></tr>"
                     for label, value, note in _facts(run, metrics, notes))
    figures = "\n".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in pictures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fatlib run report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
figure{{margin:1.5em 0}}img{{max-width:100%}}figcaption{{color:#555}}</style></head>
<body><h1>fatlib run report</h1>
<table>{rows}</table>
{figures}
</body></html>
"""
