"""Self-training as one job: a K-fold teacher relabels train_noisy, a K-fold student trains on
the curated and relabelled clips, and a re-run redoes only what did not finish; the relabelling
rule and --noisy-labels on their own, without Ray."""

import json
import runpy
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from fatlib.core.config import ConfigError, MelConfig
from fatlib.core.features import CLIP_STATS
from fatlib.io.dataset import ManifestError, read_truth
from fatlib.io.feature_rows import write_rows
from fatlib.io.feature_store import FeatureStore, SplitInfo, new_manifest
from fatlib.io.store_commits import commit_split
from fatlib.stages.infer.config import InferConfig
from fatlib.stages.infer.pipeline import infer
from fatlib.stages.self_train.relabel import relabel, write_labels_csv
from fatlib.stages.self_train.self_training import choose, self_train, self_trains
from fatlib.stages.train.config import RunDirError, TrainConfig
from fatlib.stages.train.datasets import _noisy_labels, _select
from fatlib.stages.train.run_dir import RUN_CONFIG
from tests.conftest import SMALL_STORE
from tests.stages.conftest import AGREE

CLASSES = ["Bark", "Meow", "Purr"]
N_NOISY = SMALL_STORE["n_noisy"]
ROOT = Path(__file__).resolve().parents[3]


def test_a_noisy_clip_keeps_takes_or_loses_its_labels_by_the_teachers_scores():
    scores = pd.DataFrame({"fname": ["keep", "both", "relabel", "drop", "partial"],
                           "Bark": [0.9, 0.6, 0.1, 0.4, 0.8],
                           "Meow": [0.2, 0.7, 0.8, 0.3, 0.2],
                           "Purr": [0.1, 0.1, 0.6, 0.2, 0.1]})
    labels = {"keep": ["Bark"], "both": ["Meow", "Bark"], "relabel": ["Bark"], "drop": ["Meow"],
              "partial": ["Bark", "Purr"], "unscored": ["Bark"]}
    chosen, counts = relabel(scores, labels, CLASSES, agree=0.5)
    assert chosen == {"keep": ["Bark"], "both": ["Meow", "Bark"],  # own labels, agreed with
                      "relabel": ["Meow", "Purr"],  # every class the teacher is sure of
                      "partial": ["Bark"]}  # Purr at 0.1: the teacher's Bark alone
    assert (counts.kept, counts.relabelled, counts.dropped, counts.agree) == (2, 2, 2, 0.5)
    assert counts.total == len(labels)  # "drop" (top 0.4) and "unscored" are left out
    stricter, _ = relabel(scores, labels, CLASSES, agree=0.85)
    assert stricter == {"keep": ["Bark"]}


def test_the_labels_csv_quotes_several_labels_as_kaggles_and_reads_back(tmp_path):
    uri = str(tmp_path / "noisy_labels.csv")
    write_labels_csv(uri, {"a.wav": ["Bark"], "b.wav": ["Meow", "Purr"]})
    assert (tmp_path / "noisy_labels.csv").read_text().splitlines() == [
        "fname,labels", "a.wav,Bark", 'b.wav,"Meow,Purr"']
    assert read_truth(uri) == {"a.wav": ["Bark"], "b.wav": ["Meow", "Purr"]}


def test_noisy_labels_drop_unlisted_clips_and_replace_labels():
    labels = np.empty(3, dtype=object)  # as Ray Data hands a batch of stored rows
    labels[:] = [np.array(["Bark"], dtype=object), np.array(["Meow"], dtype=object),
                 np.array(["Purr", "Bark"], dtype=object)]
    batch = {"fname": np.array(["a", "b", "c"], dtype=object), "labels": labels,
             "n_frames": np.array([10, 20, 30])}
    out = _select(batch, [], False, 0.5, True, labels={"a": ["Meow", "Purr"], "c": ["Bark"]})
    assert list(out["fname"]) == ["a", "c"] and list(out["n_frames"]) == [10, 30]
    assert [list(v) for v in out["labels"]] == [["Meow", "Purr"], ["Bark"]]
    assert list(out["weight"]) == [0.5, 0.5] and out["noisy"].all()
    kept = _select(batch, [], False, 0.5, True)  # no --noisy-labels: the stored labels
    assert [list(v) for v in kept["labels"]] == [["Bark"], ["Meow"], ["Purr", "Bark"]]


def test_noisy_labels_listing_no_noisy_clip_are_one_line(tmp_path):
    root = tmp_path / "features"
    manifest = new_manifest(MelConfig(), CLASSES, "synthetic")
    staged = str(root / "_staging" / "train_noisy")
    columns = {"fname": ["n1.wav"], "labels": [["Bark"]], "n_frames": [4], "seconds": [0.1],
               "logmel": [b"\0" * 2 * MelConfig().n_mels * 4],
               **{name: [0.0] for name in CLIP_STATS}}
    write_rows(staged + "/part-0.parquet", columns, MelConfig(), "train_noisy")
    commit_split(str(root), manifest, staged, SplitInfo("train_noisy", ["part-0.parquet"], 1,
                                                        0, 0.0, 0, 0, 0.0))
    write_labels_csv(str(tmp_path / "labels.csv"), {"other.wav": ["Bark"]})
    cfg = TrainConfig(features=str(root), out="o", noisy="warmup",
                      noisy_labels=str(tmp_path / "labels.csv"))
    with pytest.raises(ManifestError, match="lists none of train_noisy's 1 clips"):
        _noisy_labels(cfg, FeatureStore.open(str(root)))


def test_noisy_labels_outside_the_vocabulary_are_one_line(tmp_path):
    store = FeatureStore(str(tmp_path), new_manifest(MelConfig(), CLASSES, "synthetic"))
    write_labels_csv(str(tmp_path / "labels.csv"), {"a.wav": ["Bark", "Moo"]})
    cfg = TrainConfig(features=str(tmp_path), out="o", noisy="mix",
                      noisy_labels=str(tmp_path / "labels.csv"))
    with pytest.raises(ManifestError, match="a.wav has label 'Moo', not in the feature store"):
        _noisy_labels(cfg, store)
    with pytest.raises(ManifestError, match="--noisy-labels file not found"):
        _noisy_labels(TrainConfig(features=str(tmp_path), out="o", noisy_labels="missing.csv"),
                      store)


def test_noisy_labels_need_the_noisy_split_in_training():
    cfg = TrainConfig(features="f", out="o", noisy_labels="labels.csv")
    assert cfg.with_recipe(store_has_noisy=True).noisy == "mix"
    seed = TrainConfig(features="f", out="o", noisy_labels="labels.csv", recipe="seed")
    assert seed.with_recipe(store_has_noisy=True).noisy == "mix"  # asked for: mixed in
    with pytest.raises(ConfigError, match="--noisy-labels relabels train_noisy: it needs"):
        TrainConfig(features="f", out="o", noisy="off", noisy_labels="labels.csv").check()
    with pytest.raises(ConfigError, match="needs train_noisy"):
        cfg.with_recipe(store_has_noisy=False)


def test_self_training_refuses_a_store_without_noisy_clips_before_any_work(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "_MANIFEST.json").write_text(
        json.dumps(new_manifest(MelConfig(), CLASSES, "synthetic")))
    cfg = TrainConfig(features=str(tmp_path / "features"), out=str(tmp_path / "st"))
    with pytest.raises(ConfigError, match="self-training relabels train_noisy, and this"):
        self_train(cfg)
    with pytest.raises(ConfigError, match=r"--agree must be in \(0, 1\]"):
        self_train(cfg, agree=1.5)
    assert not (tmp_path / "st" / "teacher").exists()


def test_the_default_self_trains_where_the_store_has_noisy_clips_and_no_flag_says_otherwise():
    cfg = TrainConfig(features="f", out="o")
    assert self_trains(cfg, store_has_noisy=True)
    assert not self_trains(cfg, store_has_noisy=False)
    for other in ({"recipe": "seed"}, {"noisy": "off"}, {"noisy": "mix"}, {"noisy": "warmup"},
                  {"noisy_labels": "labels.csv"}, {"folds": "all"}):
        assert not self_trains(replace(cfg, **other), store_has_noisy=True), other


def test_self_training_has_two_folds_unless_given(small_store, tmp_path):
    cfg = TrainConfig(features=str(small_store / "features"), out=str(tmp_path / "run"))
    chosen, self_training, said = choose(cfg, None, fold_given=False)
    assert self_training and (chosen.fold, chosen.n_folds) == (0, 2)
    assert said == ("train_noisy in the store: self-training (2-fold teacher, noisy split "
                    "relabelled, 2-fold student; --no-self-train trains one model)")
    given = replace(cfg, fold=1, n_folds=3)
    assert choose(given, None, fold_given=True) == (given, False, None)  # one model's fold 1/3
    assert choose(given, True, fold_given=True) == (given, True, None)  # --self-train: 3 folds
    assert choose(cfg, True, fold_given=False) == (chosen, True, None)
    assert choose(cfg, False, fold_given=False) == (cfg, False, None)
    with pytest.raises(RunDirError, match="holds no self-training run to resume"):
        choose(replace(cfg, resume=True), None, fold_given=False)


def _fake_run(run, files):
    for name, text in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)


@pytest.mark.parametrize("files, kind, goes_on, refused", [
    ({"model/meta.json": "{}"}, "a one-model run", (False, False), [True, "all"]),
    ({"fold-1/model/meta.json": "{}"}, "a K-fold run", None, [True, False]),
    ({"teacher/fold-0/run_config.json": '{"n_folds": 3}'}, "a self-training run", (True, True),
     [False]),
])
def test_an_out_holding_a_run_keeps_its_kind(small_store, tmp_path, files, kind, goes_on,
                                             refused):
    # Kinds never mix in one directory (inference could not tell which model it means): the
    # default goes on with what is there, and asking for another kind is one line.
    cfg = TrainConfig(features=str(small_store / "features"), out=str(tmp_path / "run"))
    _fake_run(tmp_path / "run", files)
    if goes_on is None:  # a K-fold run: the default would train one model beside its folds
        with pytest.raises(RunDirError, match=r"holds a K-fold run: train a one-model run into "
                                              r"another --out \(--folds all --fold 0/K goes"):
            choose(cfg, None, fold_given=False)
        assert choose(replace(cfg, folds="all"), None, fold_given=False)[1] is False
    else:
        chosen, self_training, said = choose(cfg, None, fold_given=False)
        assert (self_training, chosen.n_folds == 3) == goes_on  # the recorded teacher's K
        assert said == f"{cfg.out} holds {kind}: going on with it"
    for asked in refused:
        other = replace(cfg, folds="all") if asked == "all" else cfg
        with pytest.raises(RunDirError, match=f"holds {kind}"):
            choose(other, asked if asked != "all" else None, fold_given=False)
    if kind != "a self-training run":
        with pytest.raises(RunDirError, match=f"holds {kind}, not a self-training run"):
            self_train(cfg)
        assert not (tmp_path / "run" / "teacher").exists()


def test_without_noisy_clips_the_default_trains_one_model(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "_MANIFEST.json").write_text(
        json.dumps(new_manifest(MelConfig(), CLASSES, "synthetic")))
    cfg = TrainConfig(features=str(tmp_path / "features"), out=str(tmp_path / "run"))
    assert choose(cfg, None, fold_given=False) == (cfg, False, None)


@pytest.mark.slow
def test_teacher_relabels_the_noisy_split_and_the_student_is_an_ensemble(self_trained, tmp_path):
    root, cfg, result = self_trained
    st = Path(cfg.out)
    for run in ("teacher", "student"):
        doc = json.loads((st / run / "ensemble.json").read_text())
        assert [m["artifact"] for m in doc["models"]] == ["fold-0/model", "fold-1/model"]
    assert result.teacher.trained == [0, 1] and result.student.trained == [0, 1]
    assert result.scored and result.relabelled
    noisy = pd.read_csv(root / "data" / "train_noisy.csv")
    listed = read_truth(str(st / "noisy_labels.csv"))
    assert set(listed) <= set(noisy.fname)
    counts = json.loads((st / "relabel.json").read_text())
    assert counts == {"kept": result.relabelling.kept, "relabelled": result.relabelling.relabelled,
                      "dropped": result.relabelling.dropped, "agree": AGREE}
    assert counts["kept"] + counts["relabelled"] + counts["dropped"] == N_NOISY
    assert counts["kept"] + counts["relabelled"] == len(listed) > 0
    run = json.loads((st / "student" / "fold-0" / "run_config.json").read_text())
    assert (run["noisy"], run["noisy_labels"]) == ("mix", str(st / "noisy_labels.csv"))
    teacher = json.loads((st / "teacher" / "fold-0" / "run_config.json").read_text())
    assert teacher["noisy"] == "off"  # it judges noisy labels it never learned
    assert result.ensemble == str(st / "student" / "ensemble.json")
    assert "student - teacher out-of-fold lwlrap" in result.summary()
    assert result.summary().splitlines()[-1] == (
        f"inference: infer.py --model {st} (the student's ensemble)")
    # --model <out>: the self-training directory stands for its student's ensemble.
    scored = infer(InferConfig(models=(str(st),), data=str(root / "data"),
                               out=str(tmp_path), run_id="student", tta=1))
    assert scored.models == 2 and scored.scored == SMALL_STORE["n_test"]


@pytest.mark.slow
def test_a_rerun_trains_only_the_unfinished_student_fold(self_trained, capsys):
    # What train.py does after a killed job, run again as it was (the job's choice of going on
    # with a self-training directory is test_an_out_holding_a_run_keeps_its_kind's; a job
    # subprocess here cost twice the time, a third Ray on two cores).
    _, cfg, _ = self_trained
    st = Path(cfg.out)
    done = [*(st / "teacher").rglob("*"), *(st / "noisy-scores").rglob("*"),
            st / "noisy_labels.csv", st / "relabel.json", *(st / "student" / "fold-0").rglob("*")]
    # ensemble.json is rewritten by every K-fold call, _LOCK by every job: neither is work.
    kept = {p: p.stat().st_mtime_ns for p in done
            if p.is_file() and p.name not in ("_LOCK", "ensemble.json")}
    shutil.rmtree(st / "student" / "fold-1")  # as if the job died while fold 1 trained...
    (st / "student" / "fold-1").mkdir()  # ...before its first checkpoint: its settings only
    (st / "student" / "fold-1" / RUN_CONFIG).write_text("{}")
    chosen, self_training, said = choose(replace(cfg, fold=0, n_folds=5), None, fold_given=False)
    assert self_training and chosen.n_folds == 2 and said == (
        f"{st} holds a self-training run: going on with it")
    capsys.readouterr()
    again = self_train(chosen, agree=AGREE)
    steps = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("self-training ")]
    assert steps == [f"self-training 1/3: teacher, 2 folds on the curated clips ({st}/teacher)",
                     "self-training 2/3: train_noisy relabelled before",
                     "self-training 3/3: student, 2 folds on the curated and relabelled noisy "
                     f"clips ({st}/student)"]
    assert again.teacher.trained == [] and again.student.trained == [1]
    assert not again.scored and not again.relabelled
    summary = again.summary().splitlines()
    assert summary[0].startswith("teacher: ") and summary[0].endswith("(trained before)")
    assert "(relabelled before)" in summary[1]
    assert summary[4].split()[0] == "0" and summary[4].endswith("(finished before)")
    assert summary[5].split()[0] == "1" and not summary[5].endswith("(finished before)")
    assert summary[-1] == f"inference: infer.py --model {st} (the student's ensemble)"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing else rewritten
    assert (st / "student" / "fold-1" / "model" / "meta.json").exists()


@pytest.mark.slow
def test_the_train_job_goes_on_with_the_self_training_run_in_its_out(self_trained, capsys,
                                                                       monkeypatch):
    # The default `jobs/train.py --features F --out R` run again on a finished self-training
    # run: the job's own path from its flags to its summary. In this process, on the tests'
    # Ray (a job subprocess starts a Ray of its own: ~15 s more), with --verbose, which leaves
    # the process's logging as it is.
    _, cfg, _ = self_trained
    st = Path(cfg.out)
    models = {p: p.stat().st_mtime_ns for p in st.rglob("model/*")}
    monkeypatch.setattr(sys, "argv", [
        "jobs/train.py", "--features", cfg.features, "--out", str(st), "--workers", "1",
        "--cpus-per-worker", str(cfg.cpus_per_worker), "--epochs", "1", "--batch-size", "8",
        "--crop-frames", "32", "--valid-crops", "1", "--sound-mix", "0", "--freq-shift", "0",
        "--agree", str(AGREE), "--no-report", "--verbose"])
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "raise_original_map_exception",
                        context.raise_original_map_exception)  # which the job sets
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "jobs" / "train.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert exited.value.code == 0, out
    assert out[0] == f"{st} holds a self-training run: going on with it"
    assert [line.split(":")[0] for line in out if line.startswith("self-training ")] == [
        "self-training 1/3", "self-training 2/3", "self-training 3/3"]
    assert out[-1] == f"inference: infer.py --model {st} (the student's ensemble)"
    assert {p: p.stat().st_mtime_ns for p in models} == models  # nothing trained again
