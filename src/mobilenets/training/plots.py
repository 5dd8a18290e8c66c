"""Pictures of a run: the loss and accuracy curves (written as PNG after every epoch)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..weights.checkpoint import atomic_write


def plot_curves(history: list[dict], path: Path, metric: str = "top1") -> None:
    """Loss and ``metric`` against epochs, train beside val."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for split in ("train", "val"):
        if all(f"{split}_{metric}" in r for r in history):
            ax_acc.plot(epochs, [r[f"{split}_{metric}"] for r in history], "o-", label=f"{split} {metric}")
    ax_acc.set(xlabel="epoch", ylabel=metric, title=metric, ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with contextlib.suppress(OSError):
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
