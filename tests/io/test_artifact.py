"""The model artifact: weights + meta.json, everything inference needs, refused when broken."""

import json

import pytest
import torch

from fatlib.core.config import MelConfig
from fatlib.core.inputs import Normalisation
from fatlib.core.models import build_model
from fatlib.io.artifact import ArtifactError, ModelMeta, load_meta, load_model, save_artifact


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


def test_missing_or_inconsistent_meta_is_refused(artifact, tmp_path):
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_meta(str(tmp_path / "nothing"))
    path = tmp_path / "model" / "meta.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "mel_fingerprint": "0" * 16}))
    with pytest.raises(ArtifactError, match="mel_config does not match mel_fingerprint"):
        load_meta(artifact)
    path.write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(ArtifactError, match="unsupported model artifact format 99"):
        load_meta(artifact)
