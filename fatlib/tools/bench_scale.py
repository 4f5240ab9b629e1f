"""How preprocessing and inference cost grows with the number of clips on one machine: time, peak
memory of the driver and of Ray's workers, store and ledger bytes (`benchmark.py scale`)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fatlib.io.artifact import ModelMeta, save_artifact
from fatlib.tools.peak_memory import MemorySampler, PeakMemory
from fatlib.tools.scale_data import ScaleData, wav_bytes

MB = 2**20
INCREMENT = 0.10  # --incremental inference: this share of new clips on an already scored set
LADDER = (1000, 4000, 16000, 25000)  # the default sizes: up to FAT2019's 25k clips
BUDGET_SECONDS = 20 * 60  # the default run: no next size projected to end past this
STORE_BYTES_PER_CLIP = 90_000  # log-mels, measured: 1,322 MB for 16k FAT-length clips


@dataclass
class Timed:
    """One stage run: wall seconds and peak memory."""

    seconds: float
    memory: PeakMemory


@dataclass
class ScaleRow:
    """Everything measured at one size."""

    clips: int
    audio_seconds: float
    preprocess: Timed
    store_bytes: int
    parts: int
    infer: Timed
    new_clips: int
    preprocess_new: Timed
    infer_new: Timed
    ledger_bytes: int

    def per_core(self, cores: int) -> float:
        """Preprocessing throughput: input audio-seconds per second per core."""
        return self.audio_seconds / self.preprocess.seconds / cores

    def per_cpu_second(self) -> float:
        """Preprocessing throughput: input audio-seconds per CPU-second the driver and Ray's
        workers spent (what other load on the machine does not change)."""
        return self.audio_seconds / max(self.preprocess.memory.cpu_seconds, 1e-9)


@dataclass
class ScaleBench:
    """The measured sizes, the machine's cores, the picture."""

    cores: int
    rows: list[ScaleRow] = field(default_factory=list)
    png: str | None = None

    def format(self) -> str:
        """The table, then each target's measured figure."""
        lines = [f"{'clips':>7} {'audio h':>7} {'prep s':>7} {'audio-s/s/core':>14} "
                 f"{'audio-s/cpu-s':>13} "
                 f"{'prep drv MB':>11} {'prep wkr MB':>11} {'priv MB':>7} {'store MB':>8} "
                 f"{'parts':>6} {'infer s':>7} {'inf drv MB':>10} {'inf wkr MB':>10} "
                 f"{'priv MB':>7} "
                 f"{'+10% s':>7} "
                 f"{'+10%/all':>8} {'ledger KB':>9}"]
        for r in self.rows:
            lines.append(
                f"{r.clips:>7} {r.audio_seconds / 3600:>7.1f} {r.preprocess.seconds:>7.1f} "
                f"{r.per_core(self.cores):>14.0f} {r.per_cpu_second():>13.0f} "
                f"{r.preprocess.memory.driver / MB:>11.0f} "
                f"{r.preprocess.memory.worker / MB:>11.0f} "
                f"{r.preprocess.memory.worker_private / MB:>7.0f} {r.store_bytes / MB:>8.0f} "
                f"{r.parts:>6} {r.infer.seconds:>7.1f} {r.infer.memory.driver / MB:>10.0f} "
                f"{r.infer.memory.worker / MB:>10.0f} "
                f"{r.infer.memory.worker_private / MB:>7.0f} {r.infer_new.seconds:>7.1f} "
                f"{r.infer_new.seconds / r.infer.seconds:>8.2f} {r.ledger_bytes / 1024:>9.0f}")
        return "\n".join(lines + self.targets() + ([f"picture: {self.png}"] if self.png else []))

    def targets(self) -> list[str]:
        """The issue's three targets: largest size against the smallest."""
        if len(self.rows) < 2:
            return []
        small, large = self.rows[0], self.rows[-1]
        rate = large.per_core(self.cores) / small.per_core(self.cores)
        cpu_rate = large.per_cpu_second() / small.per_cpu_second()
        driver = max(large.preprocess.memory.driver, large.infer.memory.driver) / max(
            small.preprocess.memory.driver, small.infer.memory.driver)
        worker = {stage: _ratio(large, small, stage, "worker")
                  for stage in ("preprocess", "infer")}
        private = {stage: _ratio(large, small, stage, "worker_private")
                   for stage in ("preprocess", "infer")}
        incremental = large.infer_new.seconds / large.infer.seconds
        return [f"preprocessing per core at {large.clips} clips: {rate:.2f}x that at "
                f"{small.clips} by wall time, {cpu_rate:.2f}x by CPU time (target >= 0.90)",
                f"driver peak RSS: {driver:.2f}x (target <= 1.5x)",
                # RSS counts the object store's shared pages a worker has touched, which
                # grow with the blocks in flight up to the store's size; private memory is
                # what a worker holds itself.
                "largest worker's peak, preprocess / infer (target: flat): RSS "
                f"{worker['preprocess']:.2f}x / {worker['infer']:.2f}x, private "
                f"{private['preprocess']:.2f}x / {private['infer']:.2f}x",
                f"--incremental on +10% new clips: {incremental:.2f} of scoring all "
                "(target <= 0.20)"]


def _ratio(large: ScaleRow, small: ScaleRow, stage: str, kind: str) -> float:
    """A stage's peak worker memory of one kind at the large size over the small one's."""
    return (getattr(getattr(large, stage).memory, kind)
            / max(getattr(getattr(small, stage).memory, kind), 1))


def disk_needed(sizes: tuple[int, ...]) -> int:
    """Bytes a run over these sizes writes at its peak: the split grown to the largest size
    plus its 10% of new clips, and every size's feature store."""
    largest = round(max(sizes) * (1 + INCREMENT))
    return wav_bytes(largest) + STORE_BYTES_PER_CLIP * round(sum(sizes) * (1 + INCREMENT))


def sizes_that_fit(free_bytes: int, ladder: tuple[int, ...] = LADDER) -> tuple[int, ...]:
    """The default sizes: the ladder's, up to the largest whose run fits in free_bytes with a
    tenth to spare (the smallest even when nothing fits: its run says so)."""
    fitting = [n for n in ladder if disk_needed(tuple(m for m in ladder if m <= n))
               <= 0.9 * free_bytes]
    return tuple(fitting) or ladder[:1]


def within_budget(elapsed: float, done: int, done_seconds: float, n: int,
                  budget: float = BUDGET_SECONDS) -> bool:
    """Whether a size of n clips, at the last size's seconds per clip, ends within budget."""
    return elapsed + done_seconds / done * n <= budget


def bench_scale(sizes: tuple[int, ...] | None, png: str, cores: int = 2, tta: int = 1,
                workdir: str | None = None) -> ScaleBench:
    """Preprocess and score a growing synthetic test split at each size on a local Ray; sizes
    None: the ladder's that fit the disk, stopping before one projected past the budget."""
    import ray

    from fatlib.stages.runtime import start_local_ray

    if workdir:  # a folder named for the data (tens of GB at 25k clips) may not exist yet
        Path(workdir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir or tempfile.gettempdir()).free
    budgeted = sizes is None
    sizes = sizes_that_fit(free) if budgeted else tuple(sorted(sizes))
    if disk_needed(sizes) > free:
        raise SystemExit(f"scale: sizes up to {max(sizes)} clips need ~"
                         f"{disk_needed(sizes) / 2**30:.0f} GB in {workdir or 'the temp dir'}, "
                         f"which has {free / 2**30:.0f} GB free (choose smaller --sizes or "
                         "another --workdir)")
    result = ScaleBench(cores=cores, png=png)
    with tempfile.TemporaryDirectory(prefix="fatlib-scale-", dir=workdir) as tmp:
        root = Path(tmp)
        model = _untrained_model(str(root / "model"))
        start_local_ray(num_cpus=cores, log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            warm = ScaleData(root / "warm")  # worker processes and imports start here, untimed
            warm.grow_to(16)
            _measure(warm, 16, root / "warm-run", model, tta)
            data = ScaleData(root / "data")
            print(result.format().splitlines()[0], flush=True)
            started, last = time.perf_counter(), 0.0  # last: seconds of the last size's run
            for n in sizes:
                if budgeted and result.rows and not within_budget(
                        time.perf_counter() - started, result.rows[-1].clips, last, n):
                    print(f"{n} clips: left out, projected past the {BUDGET_SECONDS // 60} "
                          "min budget (--sizes runs them)", flush=True)
                    break
                begun = time.perf_counter()
                result.rows.append(_measure(data, n, root / f"run-{n}", model, tta))
                last = time.perf_counter() - begun
                print(result.format().splitlines()[len(result.rows)], flush=True)
        finally:
            ray.shutdown()
    _plot(result, png)
    return result


def _measure(data: ScaleData, n: int, run: Path, model: str, tta: int) -> ScaleRow:
    """Grow data to n clips; preprocess into a new store and score it; then add 10% new clips,
    update the store and score them with --incremental."""
    from fatlib.stages.infer.config import InferConfig
    from fatlib.stages.infer.pipeline import infer
    from fatlib.stages.preprocess.config import PreprocessConfig
    from fatlib.stages.preprocess.convert import preprocess

    data.grow_to(n)
    seconds = data.seconds
    store, predictions = run / "store", run / "predictions"
    prep_cfg = PreprocessConfig(data=str(data.root), out=str(store), splits=("test",))
    infer_cfg = InferConfig(models=(model,), data=str(store), out=str(predictions), tta=tta,
                            run_id="all")
    prep = _timed(lambda: preprocess(prep_cfg))
    parts = list((store / "test").glob("*.parquet"))
    scored = _timed(lambda: infer(infer_cfg))
    new = data.grow_to(n + max(1, round(INCREMENT * n)))
    prep_new = _timed(lambda: preprocess(prep_cfg))
    infer_new = _timed(lambda: infer(replace(infer_cfg, run_id="new", incremental=True)))
    ledger = sum(f.stat().st_size for f in predictions.glob("_ledger*"))
    return ScaleRow(clips=n, audio_seconds=seconds, preprocess=prep,
                    store_bytes=sum(f.stat().st_size for f in parts), parts=len(parts),
                    infer=scored, new_clips=len(new), preprocess_new=prep_new,
                    infer_new=infer_new, ledger_bytes=ledger)


def _timed(work) -> Timed:
    """Run work() while sampling memory; its wall seconds and peaks."""
    with MemorySampler() as sampler:
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
    return Timed(seconds, sampler.peak)


def _untrained_model(uri: str) -> str:
    """A ResNet-18 artifact with random weights: scoring costs the same as a trained one's."""
    from fatlib.core.config import MelConfig
    from fatlib.core.frontend import Normalisation
    from fatlib.core.models import build_model
    from fatlib.tools.synth import SOUND_CLASSES

    classes = sorted(SOUND_CLASSES)
    meta = ModelMeta(arch="resnet18", classes=classes, mel=MelConfig(), crop_frames=128,
                     normalisation=Normalisation("global", -50.0, 20.0), recipe="default")
    save_artifact(uri, meta, build_model("resnet18", len(classes)).state_dict())
    return uri


def _plot(result: ScaleBench, png: str) -> None:
    """Time and peak memory against clips, log-log, with a linear reference through the first
    point (a stage that stays linear runs parallel to it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fatlib.report.figures import save_png

    clips = np.array([r.clips for r in result.rows], dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, values in (("preprocess", [r.preprocess.seconds for r in result.rows]),
                          ("infer (all clips)", [r.infer.seconds for r in result.rows]),
                          ("infer --incremental (+10%)", [r.infer_new.seconds
                                                          for r in result.rows])):
        left.loglog(clips, values, "o-", label=label)
    first = result.rows[0].preprocess.seconds if result.rows else 1.0
    left.loglog(clips, first * clips / clips[0], "k:", label="linear")
    left.set(xlabel="clips", ylabel="wall seconds", title="Time")
    for label, values in (
            ("driver, preprocess", [r.preprocess.memory.driver for r in result.rows]),
            ("driver, infer", [r.infer.memory.driver for r in result.rows]),
            ("largest worker, preprocess", [r.preprocess.memory.worker for r in result.rows]),
            ("largest worker, infer", [r.infer.memory.worker for r in result.rows]),
            ("largest worker, preprocess, private",
             [r.preprocess.memory.worker_private for r in result.rows]),
            ("largest worker, infer, private",
             [r.infer.memory.worker_private for r in result.rows])):
        right.loglog(clips, np.array(values) / MB, "o-", label=label)
    right.set(xlabel="clips", ylabel="peak RSS (MB)", title="Memory")
    # As many decades of memory as of clips: growth in proportion to the clips would run
    # corner to corner, so flat looks flat (a tight axis would magnify a 1.2x change).
    memory = np.array([line.get_ydata() for line in right.get_lines()], dtype=float)
    span = max(clips[-1] / clips[0], memory.max() / memory.min())
    middle = np.sqrt(memory.max() * memory.min())
    right.set_ylim(middle / np.sqrt(span), middle * np.sqrt(span))
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    save_png(fig, os.path.abspath(png))
