"""MelConfig: seed defaults, a fingerprint that is stable and sensitive, clear validation."""

import subprocess
import sys

import pytest

from fatlib.core.config import ConfigError, MelConfig


def test_defaults_are_the_seed_recipe():
    cfg = MelConfig()
    assert (cfg.sample_rate, cfg.n_mels, cfg.hop_length, cfg.n_fft) == (44100, 128, 694, 2560)
    assert (cfg.fmin, cfg.fmax_hz, cfg.trim_top_db, cfg.min_seconds) == (20.0, 22050.0, 60.0, 2.0)
    assert (cfg.db_ref, cfg.db_amin, cfg.db_top_db) == (1.0, 1e-10, 80.0)
    # hop 694 makes a 2 s clip exactly 128 frames: the seed's square 128 x 128 crop.
    assert cfg.n_frames(cfg.min_samples) == 128


def test_fingerprint_is_stable_across_processes_and_releases():
    # Written down: a change here invalidates every feature store and model, so it must be
    # deliberate (bump FEATURE_ALGORITHM_VERSION or a default on purpose, then update this).
    assert MelConfig().fingerprint == "d7d055f5f7bd1051"
    code = "from fatlib.core.config import MelConfig; print(MelConfig().fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == MelConfig().fingerprint


def test_fingerprint_ignores_spelling_but_not_values():
    base = MelConfig()
    assert MelConfig(fmin=20, fmax=22050).fingerprint == base.fingerprint
    assert MelConfig.from_dict(base.to_dict()).fingerprint == base.fingerprint
    changed = [MelConfig(n_mels=64), MelConfig(hop_length=512), MelConfig(trim_top_db=None),
               MelConfig(sample_rate=32000), MelConfig(min_seconds=1.0), MelConfig(fmax=16000)]
    prints = {c.fingerprint for c in changed}
    assert len(prints) == len(changed) and base.fingerprint not in prints


@pytest.mark.parametrize(
    "kwargs, words",
    [({"fmax": 30000}, "fmax"), ({"fmin": 30000}, "fmin"), ({"n_mels": 0}, "n_mels"),
     ({"hop_length": -1}, "hop_length"), ({"min_seconds": -2}, "min_seconds")],
)
def test_invalid_values_are_named(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        MelConfig(**kwargs)


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown keys"):
        MelConfig.from_dict({**MelConfig().to_dict(), "n_mel": 64})
