"""Pictures of data and models: spectrograms, batch grids, curves, per-class lwlrap, filters,
Grad-CAM. Each `*_figure` returns a matplotlib Figure (Agg backend, no display needed);
`save_png` writes one to a local path or s3://.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fatlib.core.config import MelConfig  # noqa: E402
from fatlib.core.features import hz_to_mel, mel_to_hz  # noqa: E402
from fatlib.io import storage  # noqa: E402
from fatlib.stages.lr_find.config import LRFinderResult  # noqa: E402

DPI = 100


def save_png(fig: Figure, uri: str) -> None:
    """Write the figure as PNG and release it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    storage.write_bytes(uri, buffer.getvalue())


def spectrogram_figure(logmel: np.ndarray, cfg: MelConfig, title: str = "") -> Figure:
    """One clip's log-mel: time in seconds, frequency in Hz on a mel axis, a dB colour bar."""
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=DPI)
    seconds = logmel.shape[1] / cfg.frames_per_second
    image = ax.imshow(logmel, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, seconds, -0.5, logmel.shape[0] - 0.5))
    _mel_axis(ax, cfg, logmel.shape[0])
    ax.set_xlabel("time (s)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, format="%+.0f dB")
    fig.tight_layout()
    return fig


def batch_grid_figure(crops: list[np.ndarray], labels: list[list[str]], n_cols: int = 4) -> Figure:
    """A grid of input crops with their labels, like fastai's show_batch."""
    n_rows = -(-len(crops) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3 * n_cols, 2.6 * n_rows), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, crop, names in zip(axes.flat, crops, labels, strict=False):
        ax.imshow(crop, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(", ".join(names) or "(no label)", fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict], lr_steps: np.ndarray | None = None) -> Figure:
    """Training curves: train/valid loss and lwlrap per epoch, and the LR schedule."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, score_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 3.8), dpi=DPI)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    loss_ax.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_yscale("log")
    loss_ax.legend()
    loss_ax.set_title("loss")
    score_ax.plot(epochs, [h["lwlrap"] for h in history], "o-", color="tab:green")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylim(0, 1)
    score_ax.set_title("validation lwlrap")
    if lr_steps is not None and len(lr_steps):
        lr_ax.plot(np.arange(1, len(lr_steps) + 1) * len(epochs) / len(lr_steps), lr_steps)
    else:
        lr_ax.plot(epochs, [h["lr"] for h in history], "o-")
    lr_ax.set_xlabel("epoch")
    lr_ax.set_title("learning rate (one-cycle)")
    fig.tight_layout()
    return fig


def per_class_figure(per_class: np.ndarray, weights: np.ndarray, classes: list[str]) -> Figure:
    """Per-class lwlrap as horizontal bars, worst class on top, class weight in each label."""
    order = np.argsort(per_class)
    height = max(3.0, 0.28 * len(classes) + 1)
    fig, ax = plt.subplots(figsize=(8, height), dpi=DPI)
    y = np.arange(len(order))[::-1]
    ax.barh(y, per_class[order], color=plt.cm.RdYlGn(per_class[order]))
    ax.set_yticks(y, [f"{classes[i]} (w={weights[i]:.3f})" for i in order], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("lwlrap")
    ax.set_title(f"per-class lwlrap (overall {float(per_class @ weights):.4f})")
    fig.tight_layout()
    return fig


def filters_figure(model: torch.nn.Module) -> Figure:
    """The model's first convolution filters as a grid (channel mean, own scale each)."""
    filters = model.first_conv().weight.detach().float().mean(dim=1).cpu().numpy()
    n_cols = 8
    n_rows = -(-len(filters) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 1.1, n_rows * 1.1), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes.flat, filters, strict=False):
        ax.imshow(f, cmap="coolwarm", vmin=-np.abs(f).max(), vmax=np.abs(f).max())
    fig.suptitle("first convolution's filters")
    fig.tight_layout()
    return fig


def grad_cam(model: torch.nn.Module, x: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM of one class for one input (1, C, n_mels, frames) -> (n_mels, frames) in [0, 1].

    Uses the layer the model names for it (`cam_layer()`, e.g. a ResNet's last stage): channel
    weights are the mean gradients of the class logit, the map is their ReLU'd weighted sum,
    upsampled to the input.
    """
    store: dict[str, torch.Tensor] = {}
    layer = model.cam_layer()
    forward = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
    backward = layer.register_full_backward_hook(
        lambda _m, _gi, grad_out: store.__setitem__("grad", grad_out[0]))
    was_training = model.training
    model.eval()
    try:
        x = x.clone().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model(x)[0, class_index].backward()
    finally:
        forward.remove()
        backward.remove()
        model.zero_grad(set_to_none=True)  # leave the model exactly as it came
        model.train(was_training)
    weights = store["grad"].mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * store["act"]).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear",
                                          align_corners=False)[0, 0].detach().numpy()
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def grad_cam_figure(crop: np.ndarray, cams: list[np.ndarray], labels: list[str],
                    scores: list[float], fname: str) -> Figure:
    """The crop, then one Grad-CAM overlay per true label, label and score in each title."""
    fig, axes = plt.subplots(1, 1 + len(cams), figsize=(3.4 * (1 + len(cams)), 3), dpi=DPI,
                             squeeze=False)
    axes[0, 0].imshow(crop, origin="lower", aspect="auto", cmap="magma")
    axes[0, 0].set_title(fname, fontsize=9)
    for ax, cam, label, score in zip(axes[0, 1:], cams, labels, scores, strict=True):
        ax.imshow(crop, origin="lower", aspect="auto", cmap="gray")
        ax.imshow(cam, origin="lower", aspect="auto", cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{label}: {score:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def tune_figure(trials) -> Figure:
    """Each Tune trial's best lwlrap against its LR (log axis), coloured by crop length."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=DPI)
    for crop, group in trials.groupby("crop_frames"):
        ax.scatter(group["lr"], group["lwlrap"], s=40, label=f"crop {crop} frames")
    ax.set_xscale("log")
    ax.set_xlabel("max learning rate (one-cycle)")
    ax.set_ylabel("best validation lwlrap")
    ax.set_title("Ray Tune trials")
    ax.legend()
    fig.tight_layout()
    return fig


def lr_find_figure(result: LRFinderResult) -> Figure:
    """An LR range test: raw and smoothed loss against LR (log axis), both suggestions marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=DPI)
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    ax.axvline(result.steepest, color="tab:red", linestyle="--",
               label=f"steepest {result.steepest:.1e}")
    ax.axvline(result.min_over_10, color="tab:green", linestyle=":",
               label=f"min/10 {result.min_over_10:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = np.nanpercentile(result.smoothed, 95) * 1.5
    ax.set_ylim(0, top if np.isfinite(top) and top > 0 else None)
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    return fig


def _mel_axis(ax, cfg: MelConfig, n_mels: int) -> None:
    """Label a mel-bin axis with frequencies in Hz at the bins where they fall."""
    centres = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax_hz), n_mels + 2))[1:-1]
    ticks = [f for f in (50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000)
             if centres[0] <= f <= centres[-1]]
    positions = np.interp(hz_to_mel(np.array(ticks, dtype=float)), hz_to_mel(centres),
                          np.arange(n_mels))
    ax.set_yticks(positions, [f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    ax.set_ylabel("frequency (Hz, mel scale)")
