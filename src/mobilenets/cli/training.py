"""The commands for train, evaluate, predict, and the demo: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .arguments import positive_int

TRAIN_FIELDS = (
    "task",
    "model",
    "weights",
    "epochs",
    "batch_size",
    "image_size",
    "in_chans",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "ema_decay",
    "amp",
    "grad_clip",
    "dropout",
    "augment",
    "random_erasing",
    "val_fraction",
    "seed",
    "workers",
    "device",
)


def _print_run_summary(result) -> None:
    last = result.history[-1] if result.history else {}
    metric = "mIoU" if "val_miou" in last else "mAP@[.5:.95]" if "val_map" in last else "top-1"
    print(
        f"best val {metric} {result.best_top1:.1%} after {result.epochs_run} epochs; run folder {result.run}/"
    )
    if result.bad_files:
        print(f"skipped {len(result.bad_files)} unreadable files (listed in {result.run}/report.json)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.config import config_from_recipe
    from ..training.loop import fit
    from ..training.run_folder import load_config

    if args.resume:
        config = load_config(args.resume)
        print(f"resuming {args.resume} ({config.model} on {config.data}, {config.epochs} epochs)")
        result = fit(config, resume=True, progress=not args.quiet)
    else:
        if not args.data or not args.out:
            raise ValueError("train needs DATA and --out RUN (or --resume RUN)")
        fields = {name: getattr(args, name) for name in TRAIN_FIELDS}
        if fields["task"] is None and fields["model"]:
            from ..training.config import task_of_model

            fields["task"] = task_of_model(fields["model"])
        if args.no_channels_last:
            fields["channels_last"] = False
        if args.freeze_backbone:
            fields["freeze_backbone"] = True
        recipe = args.recipe or ("finetune" if args.weights else "scratch")
        if not args.recipe:
            why = "--weights given" if args.weights else "no --weights: training from scratch"
            print(f"recipe: {recipe} ({why}; --recipe to choose another)")
        config = config_from_recipe(recipe, data=args.data, out=args.out, **fields)
        result = fit(config, progress=not args.quiet, overwrite=args.overwrite)
    _print_run_summary(result)
    return 0


def add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train or fine-tune on a folder of images (one sub-folder per class), or on the built-in demo",
        description="Train on DATA (class sub-folders; train/ and val/ if present, else a seeded split), or DATA=demo.",
    )
    train.add_argument("data", nargs="?", help="image folder, or 'demo'")
    train.add_argument("--out", help="run folder (checkpoints, metrics.jsonl, curves.png, report.json)")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly where it stopped")
    train.add_argument(
        "--recipe",
        choices=["finetune", "scratch", "paper"],
        help="default: finetune with --weights, scratch without (see docs/train.md)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out (never other files)"
    )
    train.add_argument(
        "--task",
        choices=["classify", "segment", "detect"],
        help="default: from --model (lraspp_ / deeplabv3_: segment, ssdlite_: detect, else classify); "
        "classify: class sub-folders; segment: image + mask folders; detect: COCO-format or VOC folders",
    )
    train.add_argument("--model")
    train.add_argument("--weights", help="torchvision, keras, timm, or a .safetensors checkpoint")
    train.add_argument("--epochs", type=positive_int)
    train.add_argument(
        "--batch-size", type=positive_int, help="global batch (split across torchrun processes)"
    )
    train.add_argument("--image-size", type=positive_int)
    train.add_argument(
        "--in-chans", type=int, choices=[1, 3], help="1: grayscale (from scratch; microcontroller models)"
    )
    train.add_argument("--optimizer", choices=["adamw", "rmsprop", "sgd"])
    train.add_argument("--lr", type=float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--schedule", choices=["cosine", "step"])
    train.add_argument("--warmup-epochs", type=float)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--ema-decay", type=float, help="EMA of the weights, e.g. 0.999 (0 = off)")
    train.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"])
    train.add_argument("--no-channels-last", action="store_true")
    train.add_argument("--grad-clip", type=float, help="max gradient norm")
    train.add_argument("--freeze-backbone", action="store_true", help="train the classifier only")
    train.add_argument("--dropout", type=float)
    train.add_argument("--augment", choices=["none", "trivialaugment", "randaugment"])
    train.add_argument("--random-erasing", type=float)
    train.add_argument("--val-fraction", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--workers", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..training.evaluate import evaluate

    out = args.out or (
        Path(args.source) / "eval" if Path(args.source).is_dir() else Path(args.source).with_suffix("")
    )
    result = evaluate(args.source, args.data, out=out, batch_size=args.batch_size, workers=args.workers)
    from ..numbers.report import format_table

    if hasattr(result, "map50"):  # a detection model
        print(
            f"mAP@[.5:.95] {result.map:.3f}  mAP@.5 {result.map50:.3f}  mAP@.75 {result.map75:.3f}  on {result.samples} images"
        )
        rows = [
            [
                c["class"],
                "-" if c["ap"] is None else f"{c['ap']:.3f}",
                "-" if c["ap50"] is None else f"{c['ap50']:.3f}",
            ]
            for c in result.per_class
        ]
        print(format_table(["class", "AP", "AP50"], rows))
    elif hasattr(result, "miou"):  # a segmentation model
        print(f"mIoU {result.miou:.2%}  pixel accuracy {result.pixel_acc:.2%}  on {result.samples} images")
        rows = [
            [c["class"], str(c["pixels"]), "-" if c["iou"] is None else f"{c['iou']:.3f}"]
            for c in result.per_class
        ]
        print(format_table(["class", "pixels", "IoU"], rows))
    else:
        print(f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  on {result.samples} images")
        rows = [
            [c["class"], str(c["support"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}"]
            for c in result.per_class
        ]
        print(format_table(["class", "images", "precision", "recall"], rows))
    if result.bad_files:
        print(
            f"skipped {len(result.bad_files)} unreadable files: "
            + ", ".join(b["path"] for b in result.bad_files[:5])
        )
    picture = "pr_curves.png" if hasattr(result, "map50") else "confusion.png"
    print(f"wrote {out}/evaluation.json and {out}/{picture}")
    return 0


def add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="top-1/top-5, per-class precision/recall (mIoU for segmentation, COCO mAP for detection)",
    )
    evaluate.add_argument("source", metavar="RUN|CKPT")
    evaluate.add_argument(
        "data", metavar="DATA", help="labelled folder (its val/ split if it has one), or 'demo'"
    )
    evaluate.add_argument("--out", help="where evaluation.json and confusion.png go (default RUN/eval)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64)
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from ..data.folders import BadFile
    from ..training.evaluate import predict

    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow(
            ["path", *[f"{kind}{i + 1}" for i in range(args.top_k) for kind in ("class", "prob")]]
        )
    bad = 0
    for item in predict(
        args.source,
        args.target,
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
        out=args.out,
        score_threshold=args.score_threshold,
    ):
        if isinstance(item, BadFile):
            bad += 1
            print(f"skipping {item.reason}", file=sys.stderr)
            continue
        if hasattr(item, "boxes"):  # a detection model
            found = [
                {"class": c, "score": round(p, 4), "box": [round(v, 1) for v in b]}
                for c, p, b in zip(item.classes, item.scores, item.boxes, strict=True)
            ]
            if args.json:
                print(json.dumps({"path": item.path, "detections": found}))
            else:
                shown = ", ".join(f"{d['class']} {d['score']:.2f} {d['box']}" for d in found[: args.top_k])
                more = f" (+{len(found) - args.top_k} more)" if len(found) > args.top_k else ""
                print(f"{item.path}: {len(found)} objects" + (f": {shown}{more}" if found else ""))
        elif hasattr(item, "mask"):  # a segmentation model: the mask was written
            shares = ", ".join(f"{c} {f:.0%}" for c, f in item.fractions[: args.top_k])
            print(f"{item.path}: {item.mask} ({shares})")
        elif args.json:
            print(
                json.dumps(
                    {"path": item.path, "top": [{"class": c, "prob": round(p, 6)} for c, p in item.top]}
                )
            )
        elif writer:
            writer.writerow([item.path, *[v for c, p in item.top for v in (c, f"{p:.6f}")]])
        else:
            print(f"{item.path}: " + ", ".join(f"{c} {p:.1%}" for c, p in item.top))
        sys.stdout.flush()
    if bad:
        print(f"{bad} files could not be read (listed above)", file=sys.stderr)
    return 0


def add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="top-k classes (masks for segmentation, boxes for detection) for an image or every image under a folder",
    )
    predict.add_argument("source", metavar="RUN|CKPT")
    predict.add_argument("target", metavar="IMAGE|DIR")
    predict.add_argument("--top-k", type=positive_int, default=5)
    fmt = predict.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true")
    predict.add_argument(
        "--out",
        help="segmentation: the folder for mask and overlay PNGs; detection: images with boxes drawn and "
        "detections.json (COCO results format)",
    )
    predict.add_argument(
        "--score-threshold", type=float, default=0.3, help="detection: the lowest score shown (default 0.3)"
    )
    predict.add_argument("--batch-size", type=positive_int, default=32)
    predict.add_argument("--workers", type=int, default=2)
    predict.set_defaults(func=cmd_predict)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..numbers.report import talk_table
    from ..training.demo import run_demo

    print("== The numbers (V1 Table 8, computed by `mobilenets profile`) ==\n")
    print(talk_table())
    out = args.out or {"segment": "runs/demo-segment", "detect": "runs/demo-detect"}.get(
        args.task, "runs/demo"
    )
    return run_demo(out, epochs=args.epochs, quiet=args.quiet, task=args.task)


def add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the end-to-end demo: numbers, train on the demo data, evaluate, predict"
    )
    demo.add_argument(
        "--task",
        choices=("classify", "segment", "detect"),
        default="classify",
        help="classify: V3-Small on rendered shapes (target top-1 >= 90%%); segment: LR-ASPP V3-Small on "
        "rendered scenes with pixel masks (target mIoU >= 0.8); detect: SSDLite V3-Small on rendered scenes "
        "with boxes (target mAP@.5 >= 0.8)",
    )
    demo.add_argument("--out", help="run folder (default runs/demo, runs/demo-segment or runs/demo-detect)")
    demo.add_argument("--epochs", type=positive_int)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)
