"""What the project's own install (`make venv`) provides beside the library itself."""

import subprocess
import sys
from pathlib import Path


def test_tensorboard_command_runs_beside_the_pinned_torch():
    # The README's `tensorboard --logdir`: tensorboardX (Ray Tune's) only writes event files.
    import tensorboard
    import torch

    assert torch.__version__.startswith("2.13")
    command = Path(sys.executable).parent / "tensorboard"
    done = subprocess.run([str(command), "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tensorboard.__version__


def test_progress_bars_have_tqdm():
    # Without tqdm Ray draws no progress bar even in a terminal.
    import tqdm

    assert tqdm.__version__
