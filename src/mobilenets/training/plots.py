"""Pictures of a run: the loss and accuracy curves (written as PNG after every epoch), and the
confusion matrix that evaluate writes beside evaluation.json."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..weights.checkpoint import atomic_write

COMPANIONS = {"map": ("map50",)}  # drawn beside the metric that picks the best epoch


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
    shown = [metric, *COMPANIONS.get(metric, ())]
    for split in ("train", "val"):
        for name in shown:
            if all(f"{split}_{name}" in r for r in history):
                ax_acc.plot(epochs, [r[f"{split}_{name}"] for r in history], "o-", label=f"{split} {name}")
    ax_acc.set(xlabel="epoch", ylabel=metric, title=metric, ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with contextlib.suppress(OSError):
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def plot_confusion(result, path: Path) -> None:
    """Rows normalised (recall per class); an Evaluation (images) or a MaskEvaluation (pixels)."""
    headline = f"mIoU {result.miou:.1%}" if hasattr(result, "miou") else f"top-1 {result.top1:.1%}"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.array(result.confusion, dtype=float)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(result.classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), result.classes, rotation=45, ha="right")
        ax.set_yticks(range(n), result.classes)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix ({headline}, {result.samples} images)",
    )
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def write_evaluation(result, out) -> None:
    """``out``/evaluation.json (atomically) and ``out``/confusion.png for an Evaluation or MaskEvaluation."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "evaluation.json", lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2)))
    plot_confusion(result, out / "confusion.png")
