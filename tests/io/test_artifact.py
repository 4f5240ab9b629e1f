"""The model artifact: weights + meta.json, everything inference needs, refused when broken,
truncated or edited."""

import json

import pytest
import torch

from fatlib.core.config import MelConfig
from fatlib.core.inputs import Normalisation
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
    _, model = load_model(artifact)
    assert not model.training and model(torch.zeros(1, 1, 128, 64)).shape == (1, 2)


@pytest.mark.bad_input
def test_missing_or_inconsistent_meta_is_refused(artifact, tmp_path):
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_meta(str(tmp_path / "nothing"))
    path = tmp_path / "model" / "meta.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(ArtifactError, match="unsupported model artifact format 99"):
        load_meta(artifact)
    path.write_text(json.dumps(doc))
    _unsealed(path, mel_fingerprint="0" * 16)  # a sealed one would fail its digest first
    with pytest.raises(ArtifactError, match="mel_config does not match mel_fingerprint"):
        load_meta(artifact)
    _unsealed(path, crop_frames="many")
    with pytest.raises(ArtifactError, match=r"missing or malformed field \(invalid literal"):
        load_meta(artifact)


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
    (lambda m: _edit(m / "meta.json", format=1), "edited after export"),
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


def _unsealed(path, **changes):
    """meta.json as fatlib wrote it before artifacts were sealed (format 1)."""
    doc = json.loads(path.read_text())
    for key in ("digest", "weights_bytes", "weights_sha256", "head_classes"):
        doc.pop(key, None)
    path.write_text(json.dumps({**doc, "format": 1, **changes}))


@pytest.mark.bad_input
def test_unsealed_artifacts_load_with_a_warning_once_their_weights_fit(artifact, tmp_path,
                                                                      caplog):
    _unsealed(tmp_path / "model" / "meta.json")
    with caplog.at_level("WARNING", logger="fatlib.io.artifact"):
        meta, weights = check_artifact(artifact)
    assert meta.classes == ["Bark", "Meow"] and not meta.sealed
    assert weights == (tmp_path / "model" / "weights.pt").read_bytes()
    assert [r.getMessage() for r in caplog.records] == [
        f"{artifact}: meta.json predates sealed artifacts (format 1), so an edit of its class "
        "order cannot be detected; re-train to get a sealed artifact"]
    _unsealed(tmp_path / "model" / "meta.json", classes=["Bark", "Meow", "Moo"])  # 2 outputs
    with pytest.raises(ArtifactError, match=r"does not fit the network meta\.json describes "
                       r"\(resnet18, 3 classes, 1 input channels\): .*size mismatch"):
        check_artifact(artifact)


@pytest.mark.bad_input
def test_unreadable_ensembles_are_refused_in_one_line(tmp_path):
    (tmp_path / "ensemble.json").write_text('{"models": [{"artif')
    with pytest.raises(ArtifactError, match=r"ensemble\.json: not a readable ensemble"):
        model_artifacts(str(tmp_path))
    (tmp_path / "ensemble.json").write_text('{"models": []}')
    with pytest.raises(ArtifactError, match=r"ensemble\.json: lists no models"):
        model_artifacts(str(tmp_path))
