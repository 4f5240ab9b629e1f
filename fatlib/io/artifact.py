"""The model artifact: weights + meta.json, everything inference needs and nothing it must guess.

Layout: <dir>/weights.pt (a torch state_dict) and <dir>/meta.json, written last so a reader
never sees meta.json without its weights. Works on local paths and s3:// alike.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import torch

from fatlib import __version__
from fatlib.core.config import MelConfig
from fatlib.core.errors import UserError
from fatlib.core.inputs import Normalisation
from fatlib.core.models import build_model
from fatlib.io import storage

ARTIFACT_FORMAT = 1
WEIGHTS = "weights.pt"
META = "meta.json"
ENSEMBLE = "ensemble.json"  # in a K-fold run directory: its fold artifacts, relative paths


class ArtifactError(UserError):
    """A model artifact is missing, incomplete, or of an unknown format."""


@dataclass
class ModelMeta:
    """What meta.json records about a trained model."""

    arch: str
    classes: list[str]
    mel: MelConfig
    crop_frames: int
    normalisation: Normalisation
    recipe: str
    metrics: dict = field(default_factory=dict)
    fatlib_version: str = __version__

    @property
    def in_channels(self) -> int:
        """Input channels of the network."""
        return self.normalisation.channels

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "format": ARTIFACT_FORMAT,
            "arch": self.arch,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "mel_fingerprint": self.mel.fingerprint,
            "mel_config": self.mel.to_dict(),
            "crop_frames": self.crop_frames,
            "normalisation": self.normalisation.to_dict(),
            "recipe": self.recipe,
            "metrics": self.metrics,
            "fatlib_version": self.fatlib_version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        """Inverse of `to_dict`; refuses unknown formats and inconsistent fingerprints."""
        if d.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"unsupported model artifact format {d.get('format')!r}")
        mel = MelConfig.from_dict(d["mel_config"])
        if mel.fingerprint != d["mel_fingerprint"]:
            raise ArtifactError("meta.json: mel_config does not match mel_fingerprint")
        return cls(
            arch=d["arch"],
            classes=list(d["classes"]),
            mel=mel,
            crop_frames=int(d["crop_frames"]),
            normalisation=Normalisation(**d["normalisation"]),
            recipe=d["recipe"],
            metrics=dict(d.get("metrics", {})),
            fatlib_version=d.get("fatlib_version", "unknown"),
        )


def save_artifact(uri: str, meta: ModelMeta, state_dict: dict) -> None:
    """Write weights, then meta.json (the marker that the artifact is complete)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    storage.write_bytes(storage.join(uri, WEIGHTS), buffer.getvalue())
    storage.write_json(storage.join(uri, META), meta.to_dict())


def model_artifacts(uri: str) -> list[str]:
    """The artifacts a --model location stands for: an artifact itself, a training run
    directory (its model/), or a K-fold run directory (every fold's, from ensemble.json)."""
    if storage.is_file(storage.join(uri, META)):
        return [uri]
    if storage.is_file(storage.join(uri, ENSEMBLE)):
        doc = storage.read_json(storage.join(uri, ENSEMBLE))
        return [storage.join(uri, *m["artifact"].split("/")) for m in doc["models"]]
    if storage.is_file(storage.join(uri, "model", META)):
        return [storage.join(uri, "model")]
    raise ArtifactError(f"{uri}: not a model artifact ({META} missing), a training run or a "
                        f"K-fold run ({ENSEMBLE} missing)")


def load_meta(uri: str) -> ModelMeta:
    """meta.json of the artifact at uri."""
    if not storage.is_file(storage.join(uri, META)):
        raise ArtifactError(f"{uri}: not a model artifact ({META} missing)")
    return ModelMeta.from_dict(storage.read_json(storage.join(uri, META)))


def load_model(uri: str) -> tuple[ModelMeta, torch.nn.Module]:
    """The artifact's network with its weights, in eval mode, on the CPU."""
    meta = load_meta(uri)
    model = build_model(meta.arch, len(meta.classes), in_channels=meta.in_channels)
    state = torch.load(io.BytesIO(storage.read_bytes(storage.join(uri, WEIGHTS))),
                       map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return meta, model.eval()
