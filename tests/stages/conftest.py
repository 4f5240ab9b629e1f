"""Fixtures shared by the stage tests: one self-training job, whose teacher is also the
K-fold run that the K-fold tests read."""

import pytest

# One epoch's teacher scores every class 0.3-0.6: at 0.45 it confirms some labels, replaces
# others, and the student trains on noisy clips.
AGREE = 0.45
K = 2
# All K fold tasks start at once beside one fold's workers, so they must hold no CPU: at 0.01
# each, 5 of them left the default 1.96-CPU worker no room on the 2-CPU test Ray (a hang). A
# 1.99-CPU worker makes K = 2 fold tasks enough to show it; the folds then train one at a time.
CPUS = 1.99


@pytest.fixture(scope="session")
def self_trained(small_store, tmp_path_factory):
    """(store root, config, result) of self-training on small_store: a K-fold teacher (noisy
    off: a plain K-fold run), the noisy split relabelled, a K-fold student; one epoch each,
    without sound mixing or frequency shifts (AGREE is set for such a teacher's scores)."""
    from fatlib.stages.self_train.self_training import self_train
    from fatlib.stages.train.config import TrainConfig

    root = small_store  # read here, written under out
    out = tmp_path_factory.mktemp("self-train") / "st"
    cfg = TrainConfig(features=str(root / "features"), out=str(out), workers=1,
                      cpus_per_worker=CPUS, epochs=1, batch_size=8, crop_frames=32,
                      valid_crops=1, fold=0, n_folds=K, sound_mix=0.0, freq_shift=0)
    return root, cfg, self_train(cfg, agree=AGREE)
