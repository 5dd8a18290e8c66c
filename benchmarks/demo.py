"""The demos' results and times: `mobilenets demo` (and `--task segment`) as the README runs them.

Targets: the classification demo (V3-Small from scratch) reaches top-1 >= 90% on its validation split;
the segmentation demo (issue 19: LR-ASPP V3-Small from scratch) reaches mIoU >= 0.8 in at most about 15
minutes on 2 CPU cores; the detection demo (issue 18: SSDLite V3-Small from scratch) reaches mAP@.5 >= 0.8
in at most about 15 minutes. Too long for the test suite (which runs each demo for an epoch or two), so they
are measured here, with the machine: benchmarks/results/demo_classify.md, segment_demo.md, detect_demo.md.

    python benchmarks/demo.py --task classify|segment|detect [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mobilenets.training.demo import (
    DEMO_DETECTION,
    DEMO_SEGMENTATION,
    DEMO_TRAINING,
    DETECTION_TARGET,
    SEGMENTATION_TARGET,
    run_demo,
    run_detection_demo,
    run_segmentation_demo,
)

from common import machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("classify", "segment", "detect"), default="segment")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.task == "classify":
        classify(args.out or "runs/demo-bench", args.threads)
        return
    if args.task == "detect":
        detect(args.out or "runs/demo-detect-bench", args.threads)
        return
    args.out = args.out or "runs/demo-segment-bench"
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


def detect(out: str, threads: int) -> None:
    started = time.perf_counter()
    run_detection_demo(out, quiet=True)
    seconds = time.perf_counter() - started
    evaluation = json.loads((Path(out) / "eval" / "evaluation.json").read_text())
    history = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    verdict = "meets" if evaluation["map50"] >= DETECTION_TARGET and seconds <= 15 * 60 else "misses"
    rows = [
        f"| {row['class']} | {row['ap']:.3f} | {row['ap50']:.3f} |"
        for row in evaluation["per_class"]
        if row["ap"] is not None
    ]
    settings = DEMO_DETECTION
    body = "\n".join(
        [
            f"`mobilenets demo --task detect` ({settings['model']}, from scratch, {settings['epochs']} epochs of "
            f"{settings['demo_images']['train']} scenes at {settings['image_size']}x{settings['image_size']}, "
            f"{threads} threads).",
            "",
            f"- mAP@.5 on the {evaluation['samples']} validation scenes: **{evaluation['map50']:.3f}** "
            f"(target >= {DETECTION_TARGET}); mAP@[.5:.95] {evaluation['map']:.3f}, mAP@.75 {evaluation['map75']:.3f}",
            f"- wall time, scenes rendered to boxes drawn: **{seconds / 60:.1f} min** (target <= 15 min)",
            "- validation mAP@.5 by epoch: " + ", ".join(f"{r['val_map50']:.2f}" for r in history),
            f"- verdict: {verdict}",
            "",
            "| class | AP@[.5:.95] | AP@.5 |",
            "|---|---|---|",
            *rows,
        ]
    )
    print(write_results("detect_demo", "The detection demo: mAP and time", body, machine()))


def classify(out: str, threads: int) -> None:
    started = time.perf_counter()
    run_demo(out, quiet=True)
    seconds = time.perf_counter() - started
    evaluation = json.loads((Path(out) / "eval" / "evaluation.json").read_text())
    history = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    verdict = "meets" if evaluation["top1"] >= 0.9 else "misses"
    body = "\n".join(
        [
            f"`mobilenets demo` ({DEMO_TRAINING['model']}, from scratch, {DEMO_TRAINING['epochs']} epochs at "
            f"{DEMO_TRAINING['image_size']}x{DEMO_TRAINING['image_size']}, {threads} threads).",
            "",
            f"- top-1 on the {evaluation['samples']} validation images: **{evaluation['top1']:.1%}** "
            f"(target >= 90%); top-5 {evaluation['top5']:.1%}",
            f"- wall time, images rendered to predictions: **{seconds / 60:.1f} min**",
            "- validation top-1 by epoch: " + ", ".join(f"{r['val_top1']:.2f}" for r in history),
            f"- verdict: {verdict}",
        ]
    )
    print(write_results("demo_classify", "The classification demo: top-1 and time", body, machine()))


if __name__ == "__main__":
    main()
