"""The model artifact: weights + meta.json, everything inference needs and nothing it must guess.

Layout: <dir>/weights.pt (a torch state_dict) and <dir>/meta.json, written last so a reader
never sees meta.json without its weights. Works on local paths and s3:// alike. meta.json is
sealed: it records the size and SHA-256 of weights.pt and a digest of its own fields (classes
in order included), so a truncated or replaced weights.pt and an edited meta.json are refused
instead of scoring with the wrong network or under the wrong column names. A loaded model is a
`core.frontend.Tagger`: the network behind the frontend meta.json's normalisation describes,
so it takes dB crops as stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field

import torch

from fatlib import __version__
from fatlib.core.config import MelConfig
from fatlib.core.errors import UserError
from fatlib.core.frontend import Frontend, Normalisation, Tagger
from fatlib.core.models import build_model
from fatlib.io import storage

ARTIFACT_FORMAT = 2  # format 1 (meta.json unsealed) is refused: re-train to export this one
WEIGHTS = "weights.pt"
META = "meta.json"
ENSEMBLE = "ensemble.json"  # in a K-fold run directory: its fold artifacts, relative paths
STUDENT = "student"  # in a self-training directory: the K-fold run inference uses


class ArtifactError(UserError):
    """A model artifact is missing, incomplete, edited, or of an unknown format."""


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
        """JSON form (unsealed: `save_artifact` adds the weights' and its own digest)."""
        return {
            "format": ARTIFACT_FORMAT,
            "arch": self.arch,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "head_classes": len(self.classes),
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
        """Inverse of `to_dict`; refuses other formats, missing fields, inconsistent
        fingerprints and class counts (the digest is `load_meta`'s to check)."""
        _check_format(d.get("format"), META)
        try:
            mel = MelConfig.from_dict(d["mel_config"])
            meta = cls(arch=d["arch"], classes=list(d["classes"]), mel=mel,
                       crop_frames=int(d["crop_frames"]),
                       normalisation=Normalisation(**d["normalisation"]), recipe=d["recipe"],
                       metrics=dict(d["metrics"]), fatlib_version=d["fatlib_version"])
            head = int(d["head_classes"])
            fingerprint = d["mel_fingerprint"]
        except (KeyError, TypeError, ValueError, UserError) as e:
            raise ArtifactError(f"{META}: missing or malformed field ({_brief(e)})") from None
        if mel.fingerprint != fingerprint:
            raise ArtifactError(f"{META}: mel_config does not match mel_fingerprint")
        if head != len(meta.classes):
            raise ArtifactError(f"{META} lists {len(meta.classes)} classes but the network's "
                                f"head has {head}")
        return meta


def save_artifact(uri: str, meta: ModelMeta, state_dict: dict) -> None:
    """Write weights, then meta.json sealed with their digest (the marker that the artifact
    is complete)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    weights = buffer.getvalue()
    storage.write_bytes(storage.join(uri, WEIGHTS), weights)
    doc = {**meta.to_dict(), "weights_bytes": len(weights),
           "weights_sha256": hashlib.sha256(weights).hexdigest()}
    storage.write_json(storage.join(uri, META), {**doc, "digest": _digest(doc)})


def model_artifacts(uri: str) -> list[str]:
    """The artifacts a --model location stands for: an artifact itself, a training run
    directory (its model/), a K-fold run directory (every fold's, from ensemble.json), or a
    self-training directory (its student's folds)."""
    if storage.is_file(storage.join(uri, META)):
        return [uri]
    if storage.is_file(storage.join(uri, ENSEMBLE)):
        where = storage.join(uri, ENSEMBLE)
        try:
            members = [m["artifact"].split("/") for m in storage.read_json(where)["models"]]
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ArtifactError(f"{where}: not a readable ensemble ({_brief(e)})") from None
        if not members:
            raise ArtifactError(f"{where}: lists no models")
        return [storage.join(uri, *parts) for parts in members]
    run_model = storage.is_file(storage.join(uri, "model", META))
    student = storage.is_file(storage.join(uri, STUDENT, ENSEMBLE))
    if run_model and student:  # two kinds of training ran into one directory: say which
        raise ArtifactError(f"{uri} holds a training run's model/ and a self-training run's "
                            f"{STUDENT}/: give --model {storage.join(uri, 'model')} or "
                            f"{storage.join(uri, STUDENT)}")
    if run_model:
        return [storage.join(uri, "model")]
    if student:
        return model_artifacts(storage.join(uri, STUDENT))
    raise ArtifactError(f"{uri}: not a model artifact ({META} missing), a training run, a "
                        f"K-fold run ({ENSEMBLE} missing) or a self-training run ({STUDENT}/"
                        f"{ENSEMBLE} missing)")


def load_meta(uri: str) -> ModelMeta:
    """meta.json of the artifact at uri; refused when truncated, edited or incomplete."""
    return _meta(uri, _read_meta(uri))


def read_artifact(uri: str) -> tuple[ModelMeta, bytes]:
    """The artifact's meta and weights.pt's bytes; refused when meta.json is truncated or
    edited or weights.pt is not the file meta.json was sealed with."""
    doc = _read_meta(uri)
    meta = _meta(uri, doc)
    weights = storage.read_bytes(storage.join(uri, WEIGHTS))
    _check_weights(uri, doc, weights)
    return meta, weights


def model_from_weights(uri: str, meta: ModelMeta, weights: bytes) -> Tagger:
    """The model meta describes (its frontend, then the network with weights.pt's bytes
    loaded), in eval mode, on the CPU; refused when the weights do not fit the network."""
    try:
        model = build_model(meta.arch, len(meta.classes), in_channels=meta.in_channels)
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ArtifactError(f"{uri}: {WEIGHTS} is unreadable or does not fit the network {META} "
                            f"describes ({meta.arch}, {len(meta.classes)} classes, "
                            f"{meta.in_channels} input channels): {_brief(e)}") from None
    return Tagger(Frontend(meta.normalisation), model).eval()


def load_model(uri: str) -> tuple[ModelMeta, Tagger]:
    """The artifact's model (dB crops + clip stats -> logits), in eval mode, on the CPU;
    refused unless weights.pt is the file meta.json was sealed with and fits the network it
    describes."""
    meta, weights = read_artifact(uri)
    return meta, model_from_weights(uri, meta, weights)


def check_artifact(uri: str) -> tuple[ModelMeta, bytes]:
    """The artifact's meta and weights after verifying all of it (digests, weights fit the
    network), so a reader need not fetch them again."""
    meta, weights = read_artifact(uri)
    model_from_weights(uri, meta, weights)
    return meta, weights


def _read_meta(uri: str) -> dict:
    """meta.json as a dict, of this format and matching its digest."""
    where = storage.join(uri, META)
    if not storage.is_file(where):
        raise ArtifactError(f"{uri}: not a model artifact ({META} missing)")
    try:
        doc = storage.read_json(where)
    except ValueError:
        raise ArtifactError(f"{where}: not valid JSON (truncated?); re-export the model or "
                            "restore the file") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: not a model artifact's {META}")
    _check_format(doc.get("format"), where)
    if doc.get("digest") != _digest(doc):
        raise ArtifactError(f"{where}: edited after export (its digest no longer matches its "
                            "fields, e.g. the class order); re-export the model or restore the "
                            "file")
    return doc


def _meta(uri: str, doc: dict) -> ModelMeta:
    """ModelMeta of a parsed meta.json, errors naming the artifact."""
    try:
        return ModelMeta.from_dict(doc)
    except ArtifactError as e:
        raise ArtifactError(f"{uri}: {e}") from None


def _check_format(found: object, where: str) -> None:
    """Refuse the meta.json at where unless it is of the format this fatlib writes."""
    if found == ARTIFACT_FORMAT:
        return
    if isinstance(found, int) and 0 < found < ARTIFACT_FORMAT:
        raise ArtifactError(f"{where}: a format-{found} model artifact from an older fatlib, "
                            f"no longer read; re-train the model with this fatlib to export a "
                            f"format-{ARTIFACT_FORMAT} one")
    raise ArtifactError(f"{where}: unsupported model artifact format {found!r} (this fatlib "
                        f"reads format {ARTIFACT_FORMAT})")


def _check_weights(uri: str, doc: dict, weights: bytes) -> None:
    """weights.pt must be the very file meta.json was sealed with."""
    if len(weights) != doc.get("weights_bytes"):
        raise ArtifactError(f"{uri}: {WEIGHTS} has {len(weights)} bytes, {META} recorded "
                            f"{doc.get('weights_bytes')} (truncated or replaced); re-export "
                            "the model or restore the file")
    if hashlib.sha256(weights).hexdigest() != doc.get("weights_sha256"):
        raise ArtifactError(f"{uri}: {WEIGHTS} does not match the SHA-256 {META} recorded "
                            "(corrupted or replaced); re-export the model or restore the file")


def _digest(doc: dict) -> str:
    """SHA-256 of meta.json's fields but the digest itself, in canonical JSON: any edit (a
    class renamed or moved, the weights' digest replaced) changes it."""
    fields = {key: value for key, value in doc.items() if key != "digest"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def _brief(error: Exception) -> str:
    """An exception's message on one line: its first two non-empty lines (torch's state-dict
    errors put the heading on the first, the first mismatch on the second, then many more)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(error).__name__
