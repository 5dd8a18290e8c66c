"""The talk's figures, computed from the library itself (``mobilenets figures -o DIR``).

Each figure has a ``*_data`` function that returns the numbers behind it (tests assert on those) and a
plotting function that draws them with matplotlib:

1. ``separable_cost``: standard vs depthwise separable convolution, 1/N + 1/D_K^2 (V1 Section 3.1), with
   MobileNet-224's own layers marked.
2. ``manifold``: a 2-D spiral embedded in n dimensions, through ReLU, projected back (V2 Figure 1).
3. ``blocks``: a residual bottleneck beside an inverted residual block, widths read from real modules.
4. ``activations``: swish vs h-swish and sigmoid vs h-sigmoid with their differences (V3 Figure 6).
5. ``accuracy_madds``: published top-1 against computed MAdds (the measured twin, latency against MAdds,
   is ``mobilenets.deploy.bench.zoo_latency_plot``: it times models, so it lives with the benchmarks).
6. ``se_gates``: the squeeze-and-excite channel gates of one block for two different images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

FIGURES = (
    "separable_cost",
    "manifold",
    "blocks",
    "activations",
    "accuracy_madds",
    "se_gates",
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Every figure is written the same way: tight layout, 110 dpi PNG, and the figure freed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


# 1 ---------------------------------------------------------------------------------------------------


def separable_cost_data() -> dict:
    """Cost ratio 1/N + 1/D_K^2 over N for D_K = 3, 5, 7, and MobileNet-224's 13 separable layers."""
    from ..nn.registry import build_model
    from .profile import profile_module

    channels = np.unique(np.geomspace(8, 2048, 60).astype(int))
    curves = {k: (1 / channels + 1 / k**2) for k in (3, 5, 7)}
    pairs = profile_module(build_model("mobilenet_v1_100"), 224).separable
    layers = [
        {
            "name": p.depthwise.rsplit(".", 2)[0],
            "N": p.out_channels,
            "kernel": p.kernel_size,
            "ratio": p.ratio,
            "predicted": p.predicted_ratio,
            "madds": p.madds,
            "full_madds": p.full_conv_madds,
        }
        for p in pairs
    ]
    return {"channels": channels, "curves": curves, "layers": layers}


def plot_separable_cost(path: Path) -> dict:
    plt = _plt()
    data = separable_cost_data()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, ratio in data["curves"].items():
        ax.plot(data["channels"], ratio, label=f"$D_K$ = {k}: 1/N + 1/{k * k}")
    ax.scatter(
        [l["N"] for l in data["layers"]],
        [l["ratio"] for l in data["layers"]],
        color="black",
        zorder=3,
        label="MobileNet-224's separable layers (measured)",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="output channels N",
        ylabel="depthwise separable cost / standard conv cost",
        title="Depthwise separable convolution costs 1/N + 1/$D_K^2$ of a standard one",
    )
    total = sum(l["madds"] for l in data["layers"]) / sum(l["full_madds"] for l in data["layers"])
    ax.text(
        0.02,
        0.04,
        f"MobileNet-224's 13 layers together: {total:.3f} of the standard-conv cost "
        f"({1 / total:.1f}x fewer MAdds)",
        transform=ax.transAxes,
        fontsize=8,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)
    return data


# 2 ---------------------------------------------------------------------------------------------------


def spiral(points: int = 600, turns: float = 2.5) -> np.ndarray:
    t = np.linspace(0.3, 2 * np.pi * turns, points)
    return np.stack([t * np.cos(t), t * np.sin(t)], 1) / (2 * np.pi * turns)


def manifold_data(dims=(2, 3, 5, 15, 30), seed: int = 0) -> dict:
    """V2 Figure 1: x (2-D) -> ReLU(T x) in n-D -> T^+ back to 2-D, for random T (n x 2).

    The error is the mean distance between the input and its reconstruction after the best affine fit
    (the pseudo-inverse recovers shape only up to a linear distortion): it measures what ReLU destroyed,
    which is much when the embedding is narrow and little when it is wide.
    """
    x = spiral()
    rng = np.random.default_rng(seed)
    out = {"input": x, "dims": list(dims), "recovered": {}, "error": {}}
    for n in dims:
        transform = rng.standard_normal((n, 2))
        y = np.maximum(transform @ x.T, 0)
        back = (np.linalg.pinv(transform) @ y).T
        design = np.hstack([back, np.ones((len(back), 1))])
        aligned = design @ np.linalg.lstsq(design, x, rcond=None)[0]
        out["recovered"][n] = back
        out["error"][n] = float(np.linalg.norm(aligned - x, axis=1).mean())
    return out


def plot_manifold(path: Path) -> dict:
    plt = _plt()
    data = manifold_data()
    panels = ["input", *data["dims"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    colours = np.linspace(0, 1, len(data["input"]))
    for ax, panel in zip(axes, panels, strict=True):
        points = data["input"] if panel == "input" else data["recovered"][panel]
        ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="viridis", s=2)
        ax.set_title(
            "input" if panel == "input" else f"n = {panel}\nerror {data['error'][panel]:.3f}", fontsize=9
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.suptitle(
        "ReLU on a low-dimensional manifold: narrow embeddings lose it (MobileNetV2, Figure 1)", fontsize=10
    )
    _save(fig, path)
    return data


# 3 ---------------------------------------------------------------------------------------------------


def blocks_data() -> dict:
    """Layer widths read from real modules: torchvision's ResNet-50 bottleneck and our V2 inverted residual."""
    from torchvision.models.resnet import Bottleneck

    from ..nn.blocks import InvertedResidual

    residual = Bottleneck(256, 64)
    inverted = InvertedResidual(24, 144, 24, stride=1)
    return {
        "residual": [
            ("input", residual.conv1.in_channels, "relu"),
            ("1x1", residual.conv1.out_channels, "relu"),
            ("3x3", residual.conv2.out_channels, "relu"),
            ("1x1", residual.conv3.out_channels, "relu after add"),
        ],
        "inverted": [
            ("input", inverted.expand.conv.in_channels, "linear"),
            ("1x1 expand", inverted.expand.conv.out_channels, "ReLU6"),
            ("3x3 depthwise", inverted.depthwise.conv.out_channels, "ReLU6"),
            ("1x1 project", inverted.project.conv.out_channels, "linear"),
        ],
        "inverted_residual": inverted.use_residual,
    }


def plot_blocks(path: Path) -> dict:
    plt = _plt()
    data = blocks_data()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    titles = {
        "residual": "Residual bottleneck (ResNet-50): wide -> narrow -> wide",
        "inverted": "Inverted residual (MobileNetV2): narrow -> wide -> narrow",
    }
    for ax, key in zip(axes, ("residual", "inverted"), strict=True):
        layers = data[key]
        widest = max(width for _, width, _ in layers)
        for i, (name, width, act) in enumerate(layers):
            w = 0.9 * width / widest
            linear = act == "linear"
            ax.add_patch(
                plt.Rectangle(
                    (i - 0.3, 0.5 - w / 2),
                    0.6,
                    w,
                    facecolor="white" if linear else "#9ecae1",
                    edgecolor="black",
                    hatch="//" if linear else None,
                )
            )
            ax.text(i, 0.5 - w / 2 - 0.06, f"{name}\n{width} ch\n{act}", ha="center", va="top", fontsize=8)
        ax.annotate(
            "",
            xy=(len(layers) - 1, 1.0),
            xytext=(0, 1.0),
            arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=-0.15"},
        )
        ax.text((len(layers) - 1) / 2, 1.06, "shortcut", ha="center", fontsize=8)
        ax.set(xlim=(-0.6, len(layers) - 0.4), ylim=(-0.35, 1.15), title=titles[key])
        ax.axis("off")
    fig.text(
        0.5,
        0.01,
        "box height = channel count (read from the modules); hatched = linear (no activation)",
        ha="center",
        fontsize=8,
    )
    _save(fig, path)
    return data


# 4 ---------------------------------------------------------------------------------------------------


def activations_data() -> dict:
    """The library's h-swish / h-sigmoid against swish / sigmoid on [-6, 6], and their largest differences."""
    from ..nn.layers import hard_sigmoid, hard_swish

    x = torch.linspace(-6, 6, 1201)
    sigmoid, h_sigmoid = torch.sigmoid(x), hard_sigmoid(x)
    swish, h_swish = x * torch.sigmoid(x), hard_swish(x)
    return {
        "x": x.numpy(),
        "sigmoid": sigmoid.numpy(),
        "h_sigmoid": h_sigmoid.numpy(),
        "swish": swish.numpy(),
        "h_swish": h_swish.numpy(),
        "max_sigmoid_diff": float((sigmoid - h_sigmoid).abs().max()),
        "max_swish_diff": float((swish - h_swish).abs().max()),
    }


def plot_activations(path: Path) -> dict:
    plt = _plt()
    d = activations_data()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    for column, (soft, hard, label) in enumerate(
        (("sigmoid", "h_sigmoid", "sigmoid"), ("swish", "h_swish", "swish"))
    ):
        top, bottom = axes[0, column], axes[1, column]
        top.plot(d["x"], d[soft], label=label)
        top.plot(d["x"], d[hard], "--", label=f"h-{label} (mobilenets.layers)")
        top.set(title=f"{label} vs h-{label}")
        top.legend(fontsize=8)
        bottom.plot(d["x"], d[soft] - d[hard], color="tab:red")
        bottom.set(xlabel="x", ylabel="difference")
        bottom.text(
            0.02, 0.8, f"max |diff| = {d[f'max_{label}_diff']:.3f}", transform=bottom.transAxes, fontsize=8
        )
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.suptitle(
        "h-swish = x ReLU6(x + 3) / 6: piecewise linear, cheap, and close to swish (MobileNetV3, Section 5.2)",
        fontsize=10,
    )
    _save(fig, path)
    return d


# 5 ---------------------------------------------------------------------------------------------------


def accuracy_madds_data() -> list[dict]:
    """Every registered variant: published top-1 (with source) and the MAdds this library computes."""
    from ..nn.registry import VARIANTS

    return [
        {"name": v.name, "family": v.family, "madds": v.madds, "top1": v.top1, "source": v.top1_source}
        for v in VARIANTS.values()
    ]


def plot_accuracy_madds(path: Path) -> list[dict]:
    plt = _plt()
    data = accuracy_madds_data()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {
        "mobilenet_v1": "s",
        "mobilenet_v2": "o",
        "mobilenet_v3_large": "^",
        "mobilenet_v3_small": "v",
        "mobilenet_v3_large_minimal": "x",
        "mobilenet_v3_small_minimal": "x",
    }
    for family, marker in markers.items():
        points = sorted((p for p in data if p["family"] == family), key=lambda p: p["madds"])
        if points:
            ax.plot(
                [p["madds"] / 1e6 for p in points], [p["top1"] for p in points], marker + "-", label=family
            )
    ax.set(
        xscale="log",
        xlabel="multiply-adds at 224 (M, computed by mobilenets)",
        ylabel="ImageNet top-1 (%, as published)",
        title="Accuracy against computation",
    )
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks([10, 20, 50, 100, 200, 500])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)
    return data


# 6 ---------------------------------------------------------------------------------------------------


def se_gates_data(model, images, block: int | None = None) -> dict:
    """The SE gates (one per expanded channel) of one block (the middle SE block by default) for two
    images (PIL), each preprocessed as the model's weights expect."""
    from ..nn.layers import SqueezeExcite

    model = model.eval()
    se_blocks = [i for i, b in enumerate(model.blocks) if isinstance(getattr(b, "se", None), SqueezeExcite)]
    if not se_blocks:
        raise ValueError(f"{getattr(model, 'arch', 'this model')} has no squeeze-and-excite blocks")
    block = se_blocks[len(se_blocks) // 2] if block is None else block
    from ..weights.preprocessing import Preprocessing

    transform = (getattr(model, "preprocessing", None) or Preprocessing()).transform()
    captured = []
    handle = model.blocks[block].se.register_forward_hook(
        lambda module, inputs, output: captured.append(module.gates(inputs[0]).flatten().detach())
    )
    try:
        with torch.no_grad():
            for picture in images:
                model(transform(picture)[None])
    finally:
        handle.remove()
    gates = torch.stack(captured).numpy()
    return {
        "block": block,
        "gates": gates,
        "mean_abs_difference": float(np.abs(gates[0] - gates[1]).mean()),
        "images": images,
        "arch": getattr(model, "arch", None),
    }


def plot_se_gates(path: Path, model, images) -> dict:
    plt = _plt()
    data = se_gates_data(model, images)
    fig = plt.figure(figsize=(10, 4))
    grid = fig.add_gridspec(2, 5)
    for row, picture in enumerate(data["images"][:2]):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(np.asarray(picture))
        ax.axis("off")
    ax = fig.add_subplot(grid[:, 1:])
    channels = np.arange(data["gates"].shape[1])
    ax.bar(channels - 0.2, data["gates"][0], width=0.4, label="image 1 (top)")
    ax.bar(channels + 0.2, data["gates"][1], width=0.4, label="image 2 (bottom)")
    ax.set(
        xlabel="channel of the expansion layer",
        ylabel="gate (h-sigmoid)",
        ylim=(0, 1.05),
        title=f"Squeeze-and-excite gates, block {data['block']} of {data['arch']}\n"
        f"each image re-weights the channels (mean |difference| {data['mean_abs_difference']:.3f})",
    )
    ax.legend(fontsize=8)
    _save(fig, path)
    return data


# ---------------------------------------------------------------------------------------------------


def make_figures(out: str | os.PathLike, model, images) -> dict[str, Path]:
    """Write the figures computed from the library into ``out`` (the SE gates of ``model`` for two
    ``images``); returns name -> path. The latency figure is measured: ``mobilenets.deploy.bench``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, plot in (
        ("separable_cost", plot_separable_cost),
        ("manifold", plot_manifold),
        ("blocks", plot_blocks),
        ("activations", plot_activations),
        ("accuracy_madds", plot_accuracy_madds),
    ):
        paths[name] = out / f"{name}.png"
        plot(paths[name])
    paths["se_gates"] = out / "se_gates.png"
    plot_se_gates(paths["se_gates"], model, images)
    return paths
