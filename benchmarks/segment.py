"""LR-ASPP latency: our lraspp_mobilenet_v3_large against torchvision's, in eager PyTorch and ONNX Runtime.

Batch 1 at 520x520 (the size torchvision evaluates it at), 21 classes, fp32, 2 threads, interleaved in
rounds (see common.py). Both networks are the same computation: ours is built with torchvision's
dilation convention (``atrous_style="torchvision"``) so that its weights would convert unchanged.
In ONNX Runtime ours is `mobilenets export`'s file (BN folded, plain standard ops), torchvision's is
``torch.onnx.export`` of its model as a user would export it (its dict output unwrapped).
Target (issue 19): ours <= 1.0x torchvision's time in both. Writes benchmarks/results/segment.md.

    python benchmarks/segment.py [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

from mobilenets import create_model
from mobilenets.deploy.export import OnnxSession, export_onnx

from common import interleaved, machine, onnxruntime_version, ratio_row, write_results

RESOLUTION = 520


class _OutOnly(torch.nn.Module):
    """torchvision's segmentation models return {"out": logits}; ONNX wants the tensor."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _export_torchvision(model: torch.nn.Module, path: Path) -> Path:
    x = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    torch.onnx.export(_OutOnly(model).eval(), (x,), str(path), opset_version=18)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="segment-bench-"))

    torch.manual_seed(0)
    ours = create_model("lraspp_mobilenet_v3_large", atrous_style="torchvision").eval()
    theirs = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(1, 3, RESOLUTION, RESOLUTION)

    def eager(model, unwrap: bool):
        with torch.inference_mode():
            out = model(x)
        return out["out"] if unwrap else out

    rows = []
    times = interleaved(
        {"ours": lambda: eager(ours, False), "torchvision": lambda: eager(theirs, True)}, args.rounds, 3
    )
    rows.append(ratio_row("eager PyTorch", times))
    print(rows[-1], flush=True)

    ours_onnx = export_onnx(ours, work / "ours.onnx", resolution=RESOLUTION).path
    theirs_onnx = _export_torchvision(theirs, work / "torchvision.onnx")
    sessions = {
        "ours": OnnxSession(ours_onnx, threads=args.threads),
        "torchvision": OnnxSession(theirs_onnx, threads=args.threads),
    }
    image = x.numpy()
    outputs = {
        name: session.session.run(None, {session.input_name: image})[0] for name, session in sessions.items()
    }
    assert outputs["ours"].shape == outputs["torchvision"].shape == (1, 21, RESOLUTION, RESOLUTION)
    times = interleaved(
        {
            name: lambda s=session: s.session.run(None, {s.input_name: image})
            for name, session in sessions.items()
        },
        args.rounds,
        3,
    )
    rows.append(ratio_row("ONNX Runtime", times))
    print(rows[-1], flush=True)

    body = "\n".join(
        [
            f"Median per-call latency (ms), batch 1, {RESOLUTION}x{RESOLUTION}, 21 classes, fp32, "
            f"{args.threads} threads.",
            "Ratio = median over interleaved rounds of ours / torchvision (each pair ran back to back);",
            "the quartiles show the spread of the per-round ratios. Target: ratio <= 1.0.",
            "",
            "| runtime | ours (ms) | torchvision (ms) | ratio | ratio q1-q3 | target |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    info = machine() | {"onnxruntime": onnxruntime_version()}
    print(write_results("segment", "LR-ASPP latency: mobilenets vs torchvision", body, info))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
