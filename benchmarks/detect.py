"""SSDLite latency: our ssdlite_mobilenet_v3_large (reduced tail) against torchvision's
ssdlite320_mobilenet_v3_large, in eager PyTorch and ONNX Runtime.

Batch 1 at 320x320, 91 classes, fp32, 2 threads, interleaved in rounds (see common.py). Both networks are
the same computation (3,440,060 parameters; tests/nn/test_detection.py checks that their outputs agree).
Rows:
- eager, network: the raw head outputs (class logits and box offsets for the 3,234 default boxes);
  torchvision's are its ``backbone`` then ``head``.
- eager, end to end: a 320x320 image in [0, 1] to the final detections (score > 0.001, per-class NMS at
  0.55, 300 kept, torchvision's defaults): ours normalises and calls ``detect``, torchvision's model
  normalises, "resizes" (to the same size) and post-processes in its ``forward``.
- ONNX Runtime: ours is ``mobilenets export --nms`` (boxes decoded, NonMaxSuppression in the graph),
  torchvision's is ``torch.onnx.export`` of its whole model (its transform and post-processing in the
  graph), as torchvision documents exporting detection models.
Target (issue 18): ours <= 1.0x torchvision's time. Writes benchmarks/results/detect.md.

    python benchmarks/detect.py [--rounds 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision

from mobilenets import create_model
from mobilenets.deploy.export import OnnxSession, export_onnx
from mobilenets.deploy.onnx_nms import NmsSettings

from common import interleaved, machine, onnxruntime_version, ratio_row, write_results

RESOLUTION = 320


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="detect-bench-"))

    torch.manual_seed(0)
    ours = create_model("ssdlite_mobilenet_v3_large", reduced_tail=True).eval()
    theirs = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    theirs = theirs.eval()
    assert (
        sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 3_440_060
    )
    image = torch.rand(1, 3, RESOLUTION, RESOLUTION)
    normalised = (image - 0.5) / 0.5  # torchvision's SSDLite normalisation (mean = std = 0.5)

    def network_theirs():
        features = list(theirs.backbone(normalised).values())
        return theirs.head(features)

    rows = []
    with torch.inference_mode():
        times = interleaved({"ours": lambda: ours(normalised), "torchvision": network_theirs}, args.rounds, 3)
        rows.append(ratio_row("eager PyTorch, network", times))
        print(rows[-1], flush=True)
        times = interleaved(
            {"ours": lambda: ours.detect((image - 0.5) / 0.5), "torchvision": lambda: theirs([image[0]])},
            args.rounds,
            3,
        )
        rows.append(ratio_row("eager PyTorch, end to end", times))
        print(rows[-1], flush=True)

    ours_onnx = export_onnx(
        ours, work / "ours.onnx", resolution=RESOLUTION, nms=NmsSettings(0.55, 0.001, 300)
    ).path
    theirs_onnx = work / "torchvision.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(theirs, ([image[0]],), str(theirs_onnx), opset_version=18, dynamo=False)
    sessions = {
        "ours": OnnxSession(ours_onnx, threads=args.threads),
        "torchvision": OnnxSession(theirs_onnx, threads=args.threads),
    }
    feeds = {"ours": normalised.numpy(), "torchvision": image[0].numpy()}
    for name, session in sessions.items():
        session.session.run(None, {session.input_name: feeds[name]})
    times = interleaved(
        {
            name: lambda s=session, n=name: s.session.run(None, {s.input_name: feeds[n]})
            for name, session in sessions.items()
        },
        args.rounds,
        3,
    )
    rows.append(ratio_row("ONNX Runtime, end to end (NMS in the graph)", times))
    print(rows[-1], flush=True)

    body = "\n".join(
        [
            f"Median per-call latency (ms), batch 1, {RESOLUTION}x{RESOLUTION}, 91 classes, fp32, "
            f"{args.threads} threads, random weights (the same work as trained ones but for the number of",
            "boxes above the score threshold, which both sides see alike).",
            "Ratio = median over interleaved rounds of ours / torchvision (each pair ran back to back);",
            "the quartiles show the spread of the per-round ratios. Target: ratio <= 1.0.",
            "",
            "| runtime | ours (ms) | torchvision (ms) | ratio | ratio q1-q3 | target |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    info = machine() | {"onnxruntime": onnxruntime_version()}
    print(write_results("detect", "SSDLite latency: mobilenets vs torchvision", body, info))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
