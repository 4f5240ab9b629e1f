"""The inference pipeline: clips -> log-mels (CPU tasks) -> a pool of scoring actors that load
the models once and apply TTA (or take each clip whole) -> <out>/<run_id>/ with submission.csv,
scores.parquet and _SUCCESS last (fatlib.io.predictions). Input: a dataset root (test audio), a
folder of audio files, or a feature store split. `incremental` skips clips an earlier successful
run scored, and clips it failed on whose file has not changed since.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import replace

import numpy as np
import ray.data
import torch

from fatlib.core.bounds import check_bounds
from fatlib.core.inputs import batch_stats
from fatlib.core.labels import LabelError, multi_hot
from fatlib.core.metrics import lwlrap
from fatlib.core.scoring import (
    MIN_STANDARDISED_CLIPS,
    clip_logits,
    combine,
    ensemble,
)
from fatlib.io import predictions, storage
from fatlib.io.artifact import ModelMeta, check_artifact, model_artifacts, model_from_weights
from fatlib.io.locks import holding
from fatlib.stages.infer.config import InferConfig, InferenceError, InferResult
from fatlib.stages.infer.inputs import check_sample_submission, input_rows
from fatlib.stages.runtime import (
    bound_object_store,
    cluster_cpus,
    cluster_gpus,
    ensure_ray,
    require_resources,
)

# Clips per scoring call: CPU actors keep calls small (cache-sized, several per actor); a GPU
# wants its windows in large forwards (512 clips x TTA 4 = 2 forwards of 1024 windows).
_DEFAULT_BATCH = {False: 32, True: 512}
# Blocks read ahead of each scoring actor, at most (CPU, GPU): ~50 calls of FAT-length clips.
# Reading is faster than scoring; unbounded, the blocks waiting grew with the data and so did
# the pages of the object store each actor maps (BENCHMARKS, Scale).
_READ_AHEAD = {False: 128 * 2**20, True: 1024 * 2**20}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@holding("infer")  # the predictions root, for the whole run and the ledger update
def infer(cfg: InferConfig) -> InferResult:
    """Score the input's clips, write the run's outputs, and _SUCCESS last."""
    started = time.perf_counter()
    models = tuple(a for m in cfg.models for a in model_artifacts(storage.absolute(m)))
    cfg = replace(cfg, models=models, data=storage.absolute(cfg.data),
                  out=storage.absolute(cfg.out), tta=1 if cfg.whole_clip else cfg.tta)
    checked = _check_models(cfg)  # on the driver: a broken artifact never reaches an actor
    metas = [meta for meta, _ in checked]
    classes, mel = metas[0].classes, metas[0].mel
    run_id = cfg.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not _RUN_ID.match(run_id):
        raise InferenceError(f"run id {run_id!r}: use letters, digits, '.', '_' or '-'")
    check_sample_submission(cfg.data)
    run_dir = storage.join(cfg.out, run_id)
    ledger = (predictions.update_ledger(cfg.out, exclude=run_id) if cfg.incremental
              else predictions.Ledger())
    ensure_ray()
    asked = cfg.workers
    cfg = replace(cfg, workers=asked or default_workers(cfg.gpus_per_worker))
    gpus = {"GPU": cfg.gpus_per_worker} if cfg.gpus_per_worker > 0 else {}
    decode = {cfg.node_resource: 1.0} if cfg.node_resource else {}
    require_resources([{"CPU": cfg.cpus_per_worker, **gpus}] * cfg.workers +
                      ([decode] if decode else []),
                      f"inference ({cfg.workers} scoring actors)", cfg.wait_for_resources)
    inputs = input_rows(cfg, mel, classes, ledger)
    if inputs.rows is None and cfg.incremental:  # a scheduled run with nothing new leaves no run
        return InferResult(run_id=run_id, run_dir=run_dir, scored=0, failed=0,
                           skipped=inputs.skipped, known_failures=inputs.known_failures,
                           models=len(metas), tta=cfg.tta, whole_clip=cfg.whole_clip,
                           wall_seconds=time.perf_counter() - started, written=False)
    if cfg.standardise_classes:
        _check_standardisable(inputs.n_rows)
    if asked is None:
        cfg = replace(cfg, workers=_pool_size(cfg.workers, inputs.n_rows, cfg.gpus_per_worker))
    predictions.clear_run(run_dir)  # replacing a run: never visible half-replaced
    results = _score(cfg, inputs.rows, checked, inputs.n_rows) if inputs.rows is not None else []
    errors = sorted((r["fname"], r["error"]) for r in results if r["error"])
    good = sorted((r for r in results if not r["error"]), key=lambda r: r["fname"])
    fnames = [r["fname"] for r in good]
    if cfg.standardise_classes:
        _check_standardisable(len(good), failed=len(errors))
    scores = (ensemble(np.stack([r["scores"] for r in good], axis=1), cfg.standardise_classes)
              if good else np.zeros((0, len(classes)), dtype=np.float32))
    score = _lwlrap(fnames, scores, inputs.truth, classes)
    predictions.write_outputs(run_dir, fnames, scores, classes, errors, inputs.versions)
    result = InferResult(run_id=run_id, run_dir=run_dir, scored=len(good), failed=len(errors),
                         skipped=inputs.skipped, known_failures=inputs.known_failures,
                         models=len(metas), tta=cfg.tta,
                         wall_seconds=time.perf_counter() - started, lwlrap=score,
                         errors=errors, standardised=cfg.standardise_classes,
                         whole_clip=cfg.whole_clip)
    predictions.mark_success(run_dir, _success_doc(cfg, metas, result))
    if cfg.incremental:  # fold this run in now, so the next run with nothing new writes nothing
        predictions.update_ledger(cfg.out)
    return result


class Scorer:
    """Ray Data actor: holds the models, scores batches of log-mels with TTA crops or whole."""

    def __init__(self, models: list[tuple[str, ModelMeta, ray.ObjectRef]], tta: int, how: str,
                 threads: int, whole_clip: bool = False) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = []
        for uri, meta, weights in models:  # verified on the driver, fetched from Ray's store
            model = model_from_weights(uri, meta, ray.get(weights)).to(self.device)
            if self.device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            self.models.append((meta, model))
        self.tta, self.how, self.whole_clip = tta, how, whole_clip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(fname, logmel, n_frames, clip stats, error) rows -> (fname, each model's scores
        (n, n_models, C), error); the driver combines the members over the whole run."""
        n_classes = len(self.models[0][0].classes)
        each = np.full((len(batch["fname"]), len(self.models), n_classes), np.nan,
                       dtype=np.float32)
        ok = np.flatnonzero(batch["error"] == "")
        if len(ok):
            rows = {key: value[ok] for key, value in batch.items()}
            n_mels = self.models[0][0].mel.n_mels
            try:
                stats = batch_stats(rows, n_mels)
                for m, (meta, model) in enumerate(self.models):
                    logits = clip_logits(model, rows["logmel"], rows["n_frames"], stats, n_mels,
                                         meta.crop_frames, None if self.whole_clip else self.tta,
                                         self.device)
                    each[ok, m] = combine(logits, self.how)
            except Exception as e:
                # The job's one-line error names the clips (stages.console.root_cause reads
                # PEP 678 notes; set directly, as add_note needs Python 3.11).
                e.__notes__ = [*getattr(e, "__notes__", []), _scoring_note(rows["fname"])]
                raise
        return {"fname": batch["fname"], "scores": each, "error": batch["error"]}


def _scoring_note(fnames: np.ndarray) -> str:
    """'while scoring 32 clip(s): a.wav, b.wav, c.wav, ...'."""
    shown = ", ".join(str(f) for f in fnames[:3]) + (", ..." if len(fnames) > 3 else "")
    return f"while scoring {len(fnames)} clip(s): {shown}"


def _check_models(cfg: InferConfig) -> list[tuple[ModelMeta, bytes]]:
    """Every artifact's meta and verified weights; refuse mixed vocabularies or fingerprints,
    bad settings."""
    check_bounds(cfg)  # each field as its option() declares it (--model, --tta, ...)
    checked = [check_artifact(uri) for uri in cfg.models]  # digests, weights fit the network
    first = checked[0][0]
    for uri, (meta, _) in zip(cfg.models[1:], checked[1:], strict=True):
        if meta.classes != first.classes:
            raise InferenceError(f"{uri}: its classes differ from {cfg.models[0]}'s; "
                                 "an ensemble needs one vocabulary")
        if meta.mel.fingerprint != first.mel.fingerprint:
            raise InferenceError(f"{uri}: mel fingerprint {meta.mel.fingerprint} differs from "
                                 f"{cfg.models[0]}'s {first.mel.fingerprint}")
    return checked




def _score(cfg: InferConfig, rows: ray.data.Dataset, checked: list[tuple[ModelMeta, bytes]],
           n_rows: int) -> list[dict]:
    """Run the actor pool over the rows; results come back to the driver (scores are small)."""
    workers = cfg.workers  # set by infer()
    threads = max(1, int(cfg.cpus_per_worker))
    # The weights the driver verified go to the actors through Ray's object store: one read
    # of each artifact (an s3:// download) per job, not one per actor.
    models = [(uri, meta, ray.put(weights))
              for uri, (meta, weights) in zip(cfg.models, checked, strict=True)]
    rows = bound_object_store(rows, _READ_AHEAD[cfg.gpus_per_worker > 0] * workers)
    scored = rows.map_batches(
        Scorer,
        fn_constructor_kwargs={"models": models, "tta": cfg.tta, "how": cfg.combine,
                               "threads": threads, "whole_clip": cfg.whole_clip},
        batch_size=_batch_size(cfg.batch_size or _DEFAULT_BATCH[cfg.gpus_per_worker > 0],
                               n_rows, workers),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
    )
    return scored.take_all()


def _check_standardisable(n_clips: int, failed: int = 0) -> None:
    """InferenceError unless a run has enough clips for --standardise-classes."""
    if n_clips < MIN_STANDARDISED_CLIPS:
        lost = f" ({failed} failed)" if failed else ""
        raise InferenceError(
            f"--standardise-classes needs at least {MIN_STANDARDISED_CLIPS} clips in a run, "
            f"this one has {n_clips}{lost}: score them with more clips, or without it")


def default_workers(gpus_per_worker: float) -> int:
    """Scoring actors when --workers is not given: as many as the cluster's GPUs hold at
    gpus_per_worker each (asking for more waits forever), else one single-thread actor per
    CPU (the network is the bulk of the work; decoding asks for the same fractional CPU, so
    without GPUs Ray Data runs it inside the actors' processes)."""
    if gpus_per_worker > 0:
        gpus = cluster_gpus()
        if gpus < gpus_per_worker:
            raise InferenceError(f"--gpus-per-worker {gpus_per_worker:g}: the cluster has "
                                 f"{gpus:g} GPU(s)")
        return max(1, int(gpus // gpus_per_worker))
    return cluster_cpus()


def _pool_size(workers: int, n_rows: int, gpus_per_worker: float) -> int:
    """The default pool for a run of n_rows clips: at most one actor per full scoring call."""
    # Each actor imports torch and loads every member's weights before its first clip (~3 s
    # of a CPU, BENCHMARKS "Inference throughput"): one that would score less than a call's
    # worth costs more than it scores, as in a scheduled --incremental run of a few new clips.
    return max(1, min(workers, math.ceil(n_rows / _DEFAULT_BATCH[gpus_per_worker > 0])))


def _batch_size(largest: int, n_rows: int, workers: int) -> int:
    """Clips per scoring call: at most `largest`, and small enough in a small run that every
    actor gets several calls (measured, 100 clips on 2 actors: 32-clip calls left one actor
    with 76 clips and the other with 24)."""
    return max(1, min(largest, math.ceil(n_rows / (4 * workers))))


def _lwlrap(fnames, scores, truth, classes) -> float | None:
    """lwlrap over the scored clips that have known labels, or None."""
    if not truth:
        return None
    known = [i for i, f in enumerate(fnames) if truth.get(f)]
    if not known:
        return None
    try:
        targets = multi_hot([truth[fnames[i]] for i in known], classes,
                            names=[fnames[i] for i in known])
    except LabelError as e:
        raise InferenceError(f"truth: {e}") from None
    return lwlrap(targets, scores[known])


def _success_doc(cfg: InferConfig, metas: list[ModelMeta], result: InferResult) -> dict:
    """The _SUCCESS marker's JSON: models, fingerprint, counts, timings."""
    return {
        "run_id": result.run_id,
        "models": [{"uri": uri, "recipe": m.recipe, "arch": m.arch,
                    "valid_lwlrap": m.metrics.get("lwlrap")}
                   for uri, m in zip(cfg.models, metas, strict=True)],
        "mel_fingerprint": metas[0].mel.fingerprint,
        "classes": len(metas[0].classes),
        "tta": cfg.tta,
        "whole_clip": cfg.whole_clip,
        "combine": cfg.combine,
        "standardise_classes": cfg.standardise_classes,
        "actors": cfg.workers,
        "scored": result.scored,
        "failed": result.failed,
        "skipped_already_scored": result.skipped,
        "skipped_known_failures": result.known_failures,
        "incremental": cfg.incremental,
        "lwlrap": result.lwlrap,
        "wall_seconds": round(result.wall_seconds, 3),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
