"""Feature configuration: the log-mel parameters and their stable fingerprint.

`MelConfig` is the one place the mel parameters live; the fingerprint ties the feature store,
model artifacts and inference together (docs/ARCHITECTURE.md, "Contracts").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fatlib.core.errors import UserError

# Bumped when the feature computation itself changes in a way that alters stored values, so
# features computed by an older fatlib are refused rather than silently mixed.
FEATURE_ALGORITHM_VERSION = 1

# The named choices users pick on the command line. They live here, in a module that imports
# neither torch nor Ray, so every job's --help stays fast; the code that acts on them checks
# against these same tuples.
NORMALISATIONS = ("color", "clip", "global")  # how dB values become network inputs
TTA_COMBINATIONS = ("mean_sigmoid", "max_sigmoid", "mean_logit")  # crop scores -> clip score
# How a training crop longer than its clip is filled: the clip's silence floor (the seed),
# the clip repeated, or either at random per sample. Validation and inference pad with silence.
PADDINGS = ("silence", "wrap", "random")


class ConfigError(UserError, ValueError):
    """A configuration value a user supplied is invalid."""


@dataclass(frozen=True)
class MelConfig:
    """Parameters of decode -> trim -> pad -> log-mel; defaults are the FAT2019 seed kernel's."""

    sample_rate: int = 44100
    n_mels: int = 128
    hop_length: int = 694  # 347 x 2: a 2 s clip is exactly 128 frames
    n_fft: int = 2560
    fmin: float = 20.0
    fmax: float | None = None  # None means sample_rate / 2
    trim_top_db: float | None = 60.0  # None disables silence trimming
    trim_frame_length: int = 2048
    trim_hop_length: int = 512
    min_seconds: float = 2.0  # shorter clips are zero-padded equally at both ends
    db_ref: float = 1.0
    db_amin: float = 1e-10
    db_top_db: float | None = 80.0

    def __post_init__(self) -> None:
        nyquist = self.sample_rate / 2
        checks = [
            (self.sample_rate > 0, "sample_rate must be positive"),
            (self.n_mels > 0, "n_mels must be positive"),
            (self.hop_length > 0, "hop_length must be positive"),
            (self.n_fft >= 2, "n_fft must be at least 2"),
            (0 <= self.fmin < self.fmax_hz, "need 0 <= fmin < fmax"),
            (self.fmax_hz <= nyquist, f"fmax must not exceed sample_rate / 2 ({nyquist:g} Hz)"),
            (self.trim_top_db is None or self.trim_top_db > 0, "trim_top_db must be positive"),
            (self.trim_frame_length > 0 and self.trim_hop_length > 0, "trim frames must be > 0"),
            (self.min_seconds >= 0, "min_seconds must not be negative"),
            (self.db_ref > 0 and self.db_amin > 0, "db_ref and db_amin must be positive"),
            (self.db_top_db is None or self.db_top_db >= 0, "db_top_db must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"MelConfig: {message}")

    @property
    def fmax_hz(self) -> float:
        """Upper edge of the mel filterbank in Hz."""
        return float(self.sample_rate / 2 if self.fmax is None else self.fmax)

    @property
    def min_samples(self) -> int:
        """Minimum clip length in samples after padding."""
        return int(round(self.min_seconds * self.sample_rate))

    def n_frames(self, n_samples: int) -> int:
        """Number of log-mel frames for a (padded) clip of n_samples (centred STFT)."""
        return 1 + n_samples // self.hop_length

    @property
    def frames_per_second(self) -> float:
        """Log-mel frame rate in frames per second."""
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-ready form with derived values resolved (fmax in Hz)."""
        d = dataclasses.asdict(self)
        d["fmax"] = self.fmax_hz
        # Coerce by declared type so fmin=20 and fmin=20.0 give the same fingerprint.
        for f in dataclasses.fields(self):
            if d[f.name] is not None:
                d[f.name] = float(d[f.name]) if f.type.startswith("float") else int(d[f.name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelConfig:
        """Inverse of `to_dict`; unknown keys are an error, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"MelConfig: unknown keys {unknown}")
        return cls(**d)

    @property
    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the canonical config and the feature algorithm version."""
        payload = {"feature_algorithm": FEATURE_ALGORITHM_VERSION, "mel": self.to_dict()}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
