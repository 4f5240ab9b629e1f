"""Self-training on the noisy split as one resumable job: a K-fold teacher scores train_noisy; a
noisy clip keeps its labels where the teacher agrees with them, takes the teacher's where it is
confident, and is left out otherwise; a K-fold student trains on the curated clips and those.

Layout: <out>/teacher/ (a K-fold run), <out>/noisy-scores/teacher/ (an inference run),
<out>/noisy_labels.csv and <out>/relabel.json (written last), <out>/student/ (a K-fold run whose
ensemble inference uses). Each step is skipped once its output is complete, so a killed job,
run again, continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fatlib.core.config import ConfigError
from fatlib.io import predictions, storage
from fatlib.io.artifact import ENSEMBLE, STUDENT
from fatlib.io.feature_store import FeatureStore
from fatlib.io.locks import holding
from fatlib.stages.infer.config import InferConfig
from fatlib.stages.infer.pipeline import infer
from fatlib.stages.self_train.relabel import (
    NOISY_LABELS,
    RELABEL,
    Relabelling,
    recorded,
    relabel_noisy,
)
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.kfold import KFoldResult, fold_dir, is_fold_dir, train_folds
from fatlib.stages.train.run_dir import RUN_CONFIG, has_run

TEACHER = "teacher"
FOLDS = 2  # K of the teacher and the student unless --fold says: what was measured (README)
SCORES_ROOT = "noisy-scores"  # an inference predictions root; the teacher's run is SCORES_RUN
SCORES_RUN = "teacher"


@dataclass
class SelfTrainResult:
    """The teacher's and student's K-fold results, the relabelling, and what this run redid."""

    out: str
    teacher: KFoldResult
    relabelling: Relabelling
    student: KFoldResult
    scored: bool  # this run scored the noisy split (False: an earlier run had)
    relabelled: bool  # this run relabelled it

    @property
    def ensemble(self) -> str:
        """The student's ensemble.json: what inference uses (infer --model <out>/student)."""
        return self.student.ensemble

    def summary(self) -> str:
        """The teacher's figure, the relabelling, the student's folds, the gain and what
        inference takes."""
        r = self.relabelling
        done = "" if self.relabelled else " (relabelled before)"
        return "\n".join([
            f"teacher: out-of-fold lwlrap {self.teacher.oof_lwlrap:.4f} over "
            f"{self.teacher.n_clips} curated clips"
            + ("" if self.teacher.trained else " (trained before)"),
            f"train_noisy at agree {r.agree:g}: {r.kept} kept, {r.relabelled} relabelled, "
            f"{r.dropped} dropped of {r.total} clips{done}; labels: "
            f"{storage.join(self.out, NOISY_LABELS)}",
            "student:", self.student.summary(),
            # Student fold k's noisy labels come from teacher folds that trained on fold k's
            # validation clips: its out-of-fold figure leans optimistic.
            f"student - teacher out-of-fold lwlrap: "
            f"{self.student.oof_lwlrap - self.teacher.oof_lwlrap:+.4f} (optimistic: the "
            "noisy labels come from teachers that saw each student fold's validation clips)",
            f"inference: infer.py --model {self.out} (the student's ensemble)"])


def self_trains(cfg: TrainConfig, store_has_noisy: bool) -> bool:
    """Whether the default recipe self-trains: the store has train_noisy and no flag asked for
    the seed recipe, another use of the noisy split (--noisy, --noisy-labels) or a K-fold
    ensemble of the curated clips (--folds all)."""
    return (store_has_noisy and cfg.recipe != "seed" and cfg.noisy is None
            and cfg.noisy_labels is None and cfg.folds == "one")


ONE_MODEL, K_FOLD, SELF_TRAINING = "a one-model run", "a K-fold run", "a self-training run"


def choose(cfg: TrainConfig, asked: bool | None,
           fold_given: bool) -> tuple[TrainConfig, bool, str | None]:
    """The config to run, whether it self-trains, and the line that says why where the default
    chose. asked: --self-train / --no-self-train, or None for the default recipe's choice;
    fold_given: --fold k/K was on the command line.

    An --out that holds a run keeps its kind: the default goes on with a one-model or
    self-training run (so --resume continues it) and with a K-fold run given --folds all, and a
    flag asking for another kind is refused in one line. Into a new --out the default
    self-trains where self_trains says so, unless --fold names one model's validation fold. A
    self-training job has FOLDS folds (or its recorded teacher's) unless --fold gives K."""
    kind = run_kind(cfg.out)
    default = asked is None
    going_on = f"{cfg.out} holds {kind}: going on with it" if default and kind else None
    if default:
        if kind is None:
            has_noisy = FeatureStore.open(cfg.features, cfg.mel).has("train_noisy")
            asked = not fold_given and self_trains(cfg, has_noisy)
        else:
            asked = kind == SELF_TRAINING
    if asked:
        _require_self_training_dir(cfg.out, kind)
        if cfg.resume and kind is None:
            raise RunDirError(f"{cfg.out} holds no self-training run to resume (a killed one "
                              "goes on when run again, with or without --resume)")
        if not fold_given:
            cfg = replace(cfg, fold=0, n_folds=_recorded_folds(cfg.out))
        if default and kind is None:  # the default's choice costs ~6x one model: said first
            return cfg, True, (f"train_noisy in the store: self-training ({cfg.n_folds}-fold "
                               f"teacher, noisy split relabelled, {cfg.n_folds}-fold student; "
                               "--no-self-train trains one model)")
        return cfg, True, going_on
    wanted = K_FOLD if cfg.folds == "all" else ONE_MODEL
    if kind is not None and kind != wanted:
        hint = {SELF_TRAINING: "without --no-self-train, train.py goes on with it",
                K_FOLD: "--folds all --fold 0/K goes on with it",
                ONE_MODEL: "without --folds all, train.py goes on with it"}[kind]
        raise RunDirError(f"{cfg.out} holds {kind}: train {wanted} into another --out ({hint})")
    return cfg, False, going_on


def run_kind(out: str) -> str | None:
    """What training ran into the directory out: ONE_MODEL, K_FOLD, SELF_TRAINING, or None
    (nothing, or a run that ended before its first checkpoint)."""
    if storage.is_file(out):
        return None  # no run in it: the job's lock refuses an --out that is a file
    if has_run(out):
        return ONE_MODEL
    dirs = storage.list_dirs(out)
    if storage.is_file(storage.join(out, ENSEMBLE)) or any(
            has_run(storage.join(out, d)) for d in dirs if is_fold_dir(d)):
        return K_FOLD
    if {TEACHER, STUDENT} & set(dirs):
        return SELF_TRAINING
    return None


def _require_self_training_dir(out: str, kind: str | None) -> None:
    """RunDirError when out (of run_kind kind) holds another kind of run than self-training."""
    if kind in (ONE_MODEL, K_FOLD):
        raise RunDirError(f"{out} holds {kind}, not a self-training run; self-train into "
                          "another --out")


def _recorded_folds(out: str) -> int:
    """K of the self-training run in out (its teacher's first fold's settings), else FOLDS."""
    teacher = storage.join(out, TEACHER)
    for fold in storage.list_dirs(teacher):
        recorded = storage.join(teacher, fold, RUN_CONFIG)
        if is_fold_dir(fold) and storage.is_file(recorded):
            return int(storage.read_json(recorded)["n_folds"])
    return FOLDS


@holding("train --self-train")  # <out>; the teacher, scoring and student hold their own dirs
def self_train(cfg: TrainConfig, agree: float = 0.5) -> SelfTrainResult:
    """Teacher folds, the noisy split scored and relabelled, student folds: each step that has
    not finished. agree: the teacher's score (0-1) that confirms or assigns a label."""
    if not 0 < agree <= 1:
        raise ConfigError(f"--agree must be in (0, 1] (got {agree})")
    out = storage.absolute(cfg.out)
    _require_self_training_dir(out, run_kind(out))  # choose() checked the job's; any caller's
    cfg = replace(cfg, features=storage.absolute(cfg.features), out=out, folds="all")
    if not FeatureStore.open(cfg.features, cfg.mel).has("train_noisy"):
        raise ConfigError(f"{cfg.features}: self-training relabels train_noisy, and this "
                          "feature store has none")
    # The student trains on the relabelled clips (warmed up on them with --noisy warmup).
    student_cfg = replace(cfg, out=storage.join(out, STUDENT),
                          noisy=cfg.noisy if cfg.noisy == "warmup" else "mix",
                          noisy_labels=storage.join(out, NOISY_LABELS))
    student_cfg.check()  # before the teacher trains: a refusal costs nothing yet
    _step(1, f"teacher, {cfg.n_folds} folds on the curated clips ({out}/{TEACHER})")
    # The teacher never sees the noisy split: it judges labels it has not learned.
    teacher = train_folds(replace(cfg, out=storage.join(out, TEACHER), noisy="off",
                                  noisy_labels=None))
    scores_run = storage.join(out, SCORES_ROOT, SCORES_RUN)
    # Scores of a teacher this run (re)trained a fold of are stale, whatever is on disk.
    scored = bool(teacher.trained) or not storage.is_file(
        storage.join(scores_run, predictions.SUCCESS))
    relabelling = None if scored else recorded(out, agree)
    relabelled = relabelling is None
    _step(2, "train_noisy " + ("scored and relabelled by the teacher's ensemble" if scored
                               else "relabelled by the teacher's ensemble (scored before)"
                               if relabelled else "relabelled before"))
    if relabelling is None:
        _require_no_student(cfg)  # before anything is scored or rewritten
        storage.remove(storage.join(out, RELABEL))  # pending until written again, last
        if scored:
            _score_noisy(cfg)
        relabelling = relabel_noisy(cfg, scores_run, agree)
    _step(3, f"student, {cfg.n_folds} folds on the curated and relabelled noisy clips "
             f"({out}/{STUDENT})")
    student = train_folds(student_cfg)
    return SelfTrainResult(out=out, teacher=teacher, relabelling=relabelling, student=student,
                           scored=scored, relabelled=relabelled)


def _score_noisy(cfg: TrainConfig) -> None:
    """The teacher ensemble's scores of every noisy clip, as an inference run (its TTA windows
    are the folds' validation windows)."""
    infer(InferConfig(models=(storage.join(cfg.out, TEACHER),), data=cfg.features,
                      split="train_noisy", out=storage.join(cfg.out, SCORES_ROOT),
                      run_id=SCORES_RUN, tta=cfg.valid_crops,
                      gpus_per_worker=cfg.gpus_per_worker,
                      wait_for_resources=cfg.wait_for_resources))


def _require_no_student(cfg: TrainConfig) -> None:
    """RunDirError when a student fold already trained on other labels than those this run
    is about to write (another --agree, or a retrained teacher)."""
    student = storage.join(cfg.out, STUDENT)
    started = [k for k in range(cfg.n_folds) if has_run(fold_dir(student, k))]
    if started:
        raise RunDirError(f"{student}: folds {started} trained on an earlier relabelling of "
                          f"train_noisy (another --agree, or another teacher); remove {student} "
                          "to train a student on the new labels")


def _step(k: int, what: str) -> None:
    """Say which of the three steps starts: four epoch tables in a row name no run."""
    print(f"self-training {k}/3: {what}", flush=True)
