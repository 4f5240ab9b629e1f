"""Jobs run as users run them: `python jobs/x.py ...`, output and exit codes checked."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_make_demo_data_writes_and_summarises(tmp_path):
    out = tmp_path / "data"
    args = ["jobs/make_demo_data.py", "--out", str(out), "--curated", "6", "--noisy", "4",
            "--test", "3", "--max-seconds", "1", "--sample-rate", "16000"]
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    assert "train_curated       6" in done.stdout and "classes:" in done.stdout
    assert len(pd.read_csv(out / "sample_submission.csv")) == 3
    again = _run(*args)
    assert again.returncode == 2
    assert again.stderr.strip().endswith("(pass --overwrite to replace it)")
    assert _run(*args, "--overwrite").returncode == 0


def test_make_demo_data_bad_flag_value_is_one_line_exit_2(tmp_path):
    done = _run("jobs/make_demo_data.py", "--out", str(tmp_path), "--min-seconds", "0")
    assert done.returncode == 2
    expected = ["make_demo_data: need 0 < min_seconds <= max_seconds"]
    assert done.stderr.strip().splitlines() == expected


def test_benchmark_features_reports_speedup_and_error():
    done = _run("jobs/benchmark.py", "features", "--clips", "2", "--seconds", "1", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line.split(":", 1)[1] for line in done.stdout.splitlines()}
    # The figure itself is the benchmark's to judge (BENCHMARKS.md): 2 clips beside the other
    # xdist worker's training measure the load, not the code (0.83x once in make test).
    assert float(lines["speedup per core"].strip().rstrip("x")) > 0
    assert float(lines["max |dB difference|"]) <= 0.01


def test_preprocess_job_bad_manifest_is_one_line_exit_2(tmp_path):
    from fatlib.tools.synth import SynthConfig, generate_dataset

    root = tmp_path / "data"
    generate_dataset(root, SynthConfig(n_curated=2, n_noisy=1, n_test=1, max_seconds=0.5,
                                       sample_rate=8000))
    (root / "train_noisy.csv").write_text("fname,labels\n../../etc/x.wav,Hum\n")
    done = _run("jobs/preprocess.py", "--data", str(root), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "preprocess: train_noisy.csv line 2: unsafe fname '../../etc/x.wav' "
        "(must be a plain file name)"
    ]
    assert not (tmp_path / "out").exists()


def test_preprocess_and_train_consoles_hold_their_summaries_and_ray_logs_only_with_verbose(
        tmp_path):
    from fatlib.tools.synth import SynthConfig, generate_dataset

    root, features, run = tmp_path / "data", tmp_path / "features", tmp_path / "run"
    generate_dataset(root, SynthConfig(n_curated=10, n_noisy=2, n_test=1, max_seconds=1.0,
                                       sample_rate=16000))
    verbose = _run("jobs/preprocess.py", "--data", str(root), "--out", str(features),
                   "--workers", "1", "--preview", "1", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    previews = sorted(p.name for p in (features / "preview").iterdir())
    assert len(previews) == 3 and previews[0].startswith("test_")  # one per split
    lines = verbose.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("train_curated: 10 converted, 0 failed;")
    assert lines[-1].startswith(f"features: {features} (mel fingerprint ")
    # --verbose: Ray's own logs on the console, and so no line naming their file.
    assert "\tINFO " in verbose.stderr and "ray: logs in" not in verbose.stderr
    done = _run("jobs/train.py", "--features", str(features), "--out", str(run),
                "--epochs", "2", "--batch-size", "4", "--workers", "1", "--no-report",
                "--no-self-train")
    assert done.returncode == 0, done.stderr
    console = (done.stdout + done.stderr).splitlines()
    assert len(console) <= 8, console
    assert "INFO" not in done.stdout + done.stderr and "\x1b[" not in done.stdout
    # Without --verbose, Ray's logs stay in its session directory, named in one line.
    assert done.stderr.strip().splitlines()[0].startswith("ray: logs in /")
    # fastai's table, live from the rank-0 worker, without Ray's "(RayTrainWorker pid=...)".
    table = [line for line in console if line.lstrip().startswith(("epoch ", "1 ", "2 "))]
    assert [line.split()[0] for line in table] == ["epoch", "1", "2"], console
    assert table[0] == "epoch  train_loss  valid_loss    lwlrap    time"
    assert done.stdout.strip().splitlines()[-1].startswith("best epoch ")
    # The default recipe, as the run records it (and --resume compares).
    recorded = json.loads((run / "run_config.json").read_text())
    assert (recorded["noisy"], recorded["sound_mix"], recorded["freq_shift"]) == ("off", 0.5, 4)
    # Without --no-self-train the store's noisy clips make the default self-train: said first,
    # then (here) the refusal of an --out that is a file, one line, before any training.
    (tmp_path / "file").write_text("")
    done = _run("jobs/train.py", "--features", str(features), "--out", str(tmp_path / "file"))
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        "train_noisy in the store: self-training (2-fold teacher, noisy split relabelled, "
        "2-fold student; --no-self-train trains one model)"]
    assert done.stderr.strip().splitlines()[-1].startswith(f"train: {tmp_path / 'file'}")


def test_train_leaves_the_fold_count_to_the_recipe_unless_given():
    parse = runpy.run_path(str(ROOT / "jobs" / "train.py"))["parse"]
    cfg, args = parse(["--features", "f", "--out", "o"])
    assert (cfg.fold, cfg.n_folds, args.fold_given, args.self_train) == (0, 5, False, None)
    cfg, args = parse(["--features", "f", "--out", "o", "--fold", "1/3", "--no-self-train"])
    assert (cfg.fold, cfg.n_folds, args.fold_given, args.self_train) == (1, 3, True, False)


def test_every_job_help_shows_defaults_without_loading_torch_or_ray():
    # What --help costs: the job module and its config dataclasses, no torch / Ray (~2 s).
    check = ("import runpy, sys\n"
             "sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('torch', 'ray', 'matplotlib') if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    for job in ("preprocess", "train", "infer", "tune", "lr_find", "report", "make_demo_data",
                "benchmark"):
        done = _run("-c", check, f"jobs/{job}.py")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("HEAVY []"), (job, done.stdout[-300:])
        if job not in ("benchmark", "report"):
            assert "(default: " in done.stdout, job
        assert "(default: None)" not in done.stdout, job  # a None default is said in words


def test_credentials_in_a_uri_are_refused_without_echoing_them(tmp_path):
    cases = [("jobs/preprocess.py", "--data", "s3://b/p?access_key=AKIAX&secret_key=SEKRIT",
              "--out", str(tmp_path / "o")),
             ("jobs/train.py", "--features", "s3://AKIAX:SEKRIT@b/f", "--out", str(tmp_path / "r"))]
    for args in cases:
        done = _run(*args)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "must not carry credentials" in lines[0]
        assert "SEKRIT" not in done.stdout + done.stderr and "AKIAX" not in done.stderr


@pytest.mark.bad_input
def test_a_secret_holding_a_slash_is_refused_without_any_part_shown(tmp_path):
    # AWS secrets hold '/': the secret's '/' comes before the '@' that marks the userinfo.
    uri = "s3://AKIAEXAMPLE:abc/def+ghi@bucket/x"
    cases = [("jobs/preprocess.py", "--data", uri, "--out", str(tmp_path / "o")),
             ("jobs/infer.py", "--model", uri, "--data", str(tmp_path), "--out",
              str(tmp_path / "p"))]
    for args in cases:
        done = _run(*args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "must not carry credentials" in lines[0], lines
        shown = done.stdout + done.stderr
        assert [s for s in ("AKIAEXAMPLE", "abc", "def+ghi") if s in shown] == []
        assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


def test_infer_console_holds_no_ray_warnings_and_its_log_keeps_them(tmp_path):
    import torch

    from fatlib.core.config import MelConfig
    from fatlib.core.inputs import Normalisation
    from fatlib.core.models import build_model
    from fatlib.io.artifact import ModelMeta, save_artifact
    from fatlib.tools.synth import SOUND_CLASSES, SynthConfig, generate_dataset

    root, model = tmp_path / "data", tmp_path / "model"
    generate_dataset(root, SynthConfig(n_curated=0, n_noisy=0, n_test=1, max_seconds=1.0,
                                       sample_rate=16000))
    classes = sorted(SOUND_CLASSES)
    torch.manual_seed(0)
    save_artifact(str(model), ModelMeta(arch="resnet18", classes=classes, mel=MelConfig(),
                                        crop_frames=64, normalisation=Normalisation("global"),
                                        recipe="default", metrics={}),
                  build_model("resnet18", len(classes)).state_dict())
    # One clip, two scoring actors: Ray Data warns that the pool gets fewer inputs than actors.
    done = _run("jobs/infer.py", "--model", str(model), "--data", str(root), "--out",
                str(tmp_path / "pred"), "--workers", "2", "--tta", "1")
    assert done.returncode == 0, done.stderr
    err, out = done.stderr.splitlines(), done.stdout.splitlines()
    assert len(err) == 1 and err[0].startswith("ray: logs in /"), err  # and nothing of Ray's
    assert len(out) == 1 and out[0].startswith("run "), out
    logs = Path(err[0].split()[3])
    driver_log = (logs / "fatlib-driver.log").read_text()
    assert "has constructor arguments in the object store" in driver_log
    assert "UserWarning: The minimum number of concurrent actors" in driver_log


@pytest.mark.bad_input
def test_infer_refuses_an_artifact_from_before_the_seal_in_one_line(tmp_path):
    import json

    from fatlib.core.config import MelConfig
    from fatlib.core.frontend import Normalisation
    from fatlib.core.models import build_model
    from fatlib.io.artifact import ModelMeta, save_artifact

    model = tmp_path / "model"
    save_artifact(str(model), ModelMeta(arch="resnet18", classes=["a", "b"], mel=MelConfig(),
                                        crop_frames=64, normalisation=Normalisation("global"),
                                        recipe="default"),
                  build_model("resnet18", 2).state_dict())
    doc = json.loads((model / "meta.json").read_text())
    for key in ("digest", "weights_bytes", "weights_sha256", "head_classes"):
        del doc[key]
    (model / "meta.json").write_text(json.dumps({**doc, "format": 1}))  # as fatlib wrote it
    done = _run("jobs/infer.py", "--model", str(model), "--data", str(tmp_path), "--out",
                str(tmp_path / "pred"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"infer: {model}/meta.json: a format-1 model artifact from an older fatlib, no longer "
        "read; re-train the model with this fatlib to export a format-2 one"]
