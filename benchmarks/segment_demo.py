"""The segmentation demo's result and time: `mobilenets demo --task segment` as the README runs it.

Issue 19's target: LR-ASPP V3-Small from scratch on 2 CPU cores reaches mIoU >= 0.8 on the demo's
validation scenes in at most about 15 minutes. Too long for the test suite (which runs the demo for one
epoch), so it is measured here: mIoU, per-class IoU and wall time, written to
benchmarks/results/segment_demo.md with the machine.

    python benchmarks/segment_demo.py [--threads 2] [--out runs/demo-segment-bench]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mobilenets.training.demo import DEMO_SEGMENTATION, SEGMENTATION_TARGET, run_segmentation_demo

from common import machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/demo-segment-bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_segmentation_demo(args.out, quiet=True)
    seconds = time.perf_counter() - started
    evaluation = json.loads((Path(args.out) / "eval" / "evaluation.json").read_text())
    history = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    verdict = "meets" if evaluation["miou"] >= SEGMENTATION_TARGET and seconds <= 15 * 60 else "misses"
    rows = [
        f"| {row['class']} | {row['iou']:.3f} |" for row in evaluation["per_class"] if row["iou"] is not None
    ]
    body = "\n".join(
        [
            f"`mobilenets demo --task segment` ({DEMO_SEGMENTATION['model']}, from scratch, "
            f"{DEMO_SEGMENTATION['epochs']} epochs of {DEMO_SEGMENTATION['demo_images']['train']} scenes at "
            f"{DEMO_SEGMENTATION['image_size']}x{DEMO_SEGMENTATION['image_size']}, {args.threads} threads).",
            "",
            f"- mIoU on the {evaluation['samples']} validation scenes: **{evaluation['miou']:.3f}** "
            f"(target >= {SEGMENTATION_TARGET}); pixel accuracy {evaluation['pixel_acc']:.1%}",
            f"- wall time, scenes rendered to masks predicted: **{seconds / 60:.1f} min** (target <= 15 min)",
            "- validation mIoU by epoch: " + ", ".join(f"{r['val_miou']:.2f}" for r in history),
            f"- verdict: {verdict}",
            "",
            "| class | IoU |",
            "|---|---|",
            *rows,
        ]
    )
    print(write_results("segment_demo", "The segmentation demo: mIoU and time", body, machine()))


if __name__ == "__main__":
    main()
