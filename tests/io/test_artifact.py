"""The model artifact: weights + meta.json, everything inference needs, refused when broken,
truncated or edited."""

import json

import numpy as np
import pytest
import torch

from fatlib.core.config import MelConfig
from fatlib.core.features import clip_stats
from fatlib.core.frontend import Normalisation
from fatlib.core.models import build_model
from fatlib.io.artifact import (
    ArtifactError,
    ModelMeta,
    check_artifact,
    load_meta,
    load_model,
    model_artifacts,
    save_artifact,
)


@pytest.fixture
def artifact(tmp_path):
    meta = ModelMeta(arch="resnet18", classes=["Bark", "Meow"], mel=MelConfig(), crop_frames=64,
                     normalisation=Normalisation("global", -50.0, 20.0), recipe="default",
                     metrics={"lwlrap": 0.9})
    uri = str(tmp_path / "model")
    save_artifact(uri, meta, build_model("resnet18", 2).state_dict())
    return uri


def test_meta_round_trips(artifact):
    meta = load_meta(artifact)
    assert meta.classes == ["Bark", "Meow"] and meta.crop_frames == 64
    assert meta.normalisation == Normalisation("global", -50.0, 20.0)
    assert meta.mel.fingerprint == MelConfig().fingerprint and meta.metrics == {"lwlrap": 0.9}
    _, model = load_model(artifact)  # takes dB crops as stored, normalises them itself
    db = np.random.default_rng(0).normal(-50, 20, size=(1, 128, 64)).astype(np.float32)
    stats = torch.from_numpy(clip_stats(db[0])[None])
    with torch.no_grad():
        logits = model(torch.from_numpy(db), stats)
        expected = model.network(torch.from_numpy((db[:, None] + 50) / 20))
    assert not model.training and logits.shape == (1, 2)
    torch.testing.assert_close(logits, expected)


@pytest.mark.bad_input
def test_missing_or_inconsistent_meta_is_refused(artifact, tmp_path):
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_meta(str(tmp_path / "nothing"))
    path = tmp_path / "model" / "meta.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(ArtifactError, match="unsupported model artifact format 99"):
        load_meta(artifact)
    # Fields a sealed meta.json could only hold if fatlib wrote them so (else: its digest).
    with pytest.raises(ArtifactError, match="mel_config does not match mel_fingerprint"):
        ModelMeta.from_dict({**doc, "mel_fingerprint": "0" * 16})
    with pytest.raises(ArtifactError, match=r"missing or malformed field \(invalid literal"):
        ModelMeta.from_dict({**doc, "crop_frames": "many"})
    with pytest.raises(ArtifactError, match="lists 2 classes but the network's head has 3"):
        ModelMeta.from_dict({**doc, "head_classes": 3})


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit(path, **changes):
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, **changes}, indent=2))


@pytest.mark.bad_input
@pytest.mark.parametrize("damage, message", [
    (lambda m: _truncate(m / "weights.pt"), r"weights\.pt has \d+ bytes, meta\.json recorded \d+"),
    (lambda m: _truncate(m / "meta.json"), r"meta\.json: not valid JSON \(truncated\?\)"),
    (lambda m: _edit(m / "meta.json", crop_frames=128), "edited after export"),
    (lambda m: _edit(m / "meta.json", classes=["Meow", "Bark"]), "edited after export"),
    (lambda m: _edit(m / "meta.json", format=1), "a format-1 model artifact"),
], ids=["truncated-weights", "truncated-meta", "edited-field", "swapped-classes", "downgraded"])
def test_damaged_artifacts_are_refused_in_one_line(artifact, tmp_path, damage, message):
    damage(tmp_path / "model")
    with pytest.raises(ArtifactError, match=message) as refused:
        check_artifact(artifact)
    assert str(refused.value).startswith(artifact) and "\n" not in str(refused.value)


@pytest.mark.bad_input
def test_replaced_weights_of_the_same_size_are_refused(artifact, tmp_path):
    other = tmp_path / "other"
    save_artifact(str(other), load_meta(artifact), build_model("resnet18", 2).state_dict())
    (tmp_path / "model" / "weights.pt").write_bytes((other / "weights.pt").read_bytes())
    with pytest.raises(ArtifactError, match="does not match the SHA-256"):
        load_model(artifact)


def _unsealed(path):
    """meta.json as fatlib wrote it before artifacts were sealed (format 1)."""
    doc = json.loads(path.read_text())
    for key in ("digest", "weights_bytes", "weights_sha256", "head_classes"):
        doc.pop(key)
    path.write_text(json.dumps({**doc, "format": 1}))


@pytest.mark.bad_input
def test_unsealed_artifacts_are_refused_in_one_line_saying_to_retrain(artifact, tmp_path):
    _unsealed(tmp_path / "model" / "meta.json")
    with pytest.raises(ArtifactError) as refused:
        check_artifact(artifact)
    assert str(refused.value) == (
        f"{artifact}/meta.json: a format-1 model artifact from an older fatlib, no longer read; "
        "re-train the model with this fatlib to export a format-2 one")


@pytest.mark.bad_input
def test_unreadable_ensembles_are_refused_in_one_line(tmp_path):
    (tmp_path / "ensemble.json").write_text('{"models": [{"artif')
    with pytest.raises(ArtifactError, match=r"ensemble\.json: not a readable ensemble"):
        model_artifacts(str(tmp_path))
    (tmp_path / "ensemble.json").write_text('{"models": []}')
    with pytest.raises(ArtifactError, match=r"ensemble\.json: lists no models"):
        model_artifacts(str(tmp_path))


def test_a_self_training_directory_stands_for_its_students_folds(tmp_path):
    student = tmp_path / "st" / "student"
    student.mkdir(parents=True)
    (student / "ensemble.json").write_text(
        json.dumps({"models": [{"artifact": "fold-0/model"}, {"artifact": "fold-1/model"}]}))
    assert model_artifacts(str(tmp_path / "st")) == [str(student / "fold-0" / "model"),
                                                     str(student / "fold-1" / "model")]
    # A one-model run trained into the same directory too: neither is chosen silently.
    (tmp_path / "st" / "model").mkdir()
    (tmp_path / "st" / "model" / "meta.json").write_text("{}")
    with pytest.raises(ArtifactError) as both:
        model_artifacts(str(tmp_path / "st"))
    assert str(both.value) == (
        f"{tmp_path / 'st'} holds a training run's model/ and a self-training run's student/: "
        f"give --model {tmp_path / 'st' / 'model'} or {student}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"or a self-training run \(student/ensemble\.json "
                                            r"missing\)"):
        model_artifacts(str(tmp_path / "empty"))
