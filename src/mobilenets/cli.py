"""The ``mobilenets`` command line: a thin argparse layer over the library, no logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import profile_module
    from .report import per_layer_table, profiles_table, resolve_module, talk_table

    if args.published:
        from .report import published_table

        print(published_table())
        return 0
    if not args.models:
        if args.json:
            from .published import profile_named
            from .report import TALK_MODELS

            print(json.dumps([profile_named(m).summary() for _, m in TALK_MODELS], indent=2))
        else:
            print(talk_table())
        return 0
    profiles = []
    for spec in args.models:
        label, module = resolve_module(spec)
        minimum = getattr(module, "min_resolution", 1)
        if args.resolution < minimum:
            raise ValueError(f"--resolution {args.resolution} is too small for {label}: at least {minimum}")
        profiles.append(profile_module(module, args.resolution, name=label))
    if args.json:
        data = []
        for p in profiles:
            entry = p.summary()
            if args.per_layer:
                entry["layers"] = [vars(layer) for layer in p.layers]
                entry["separable"] = [
                    {
                        "depthwise": s.depthwise,
                        "pointwise": s.pointwise,
                        "ratio": s.ratio,
                        "predicted": s.predicted_ratio,
                    }
                    for s in p.separable
                ]
            data.append(entry)
        print(json.dumps(data, indent=2))
    elif args.per_layer:
        print("\n\n".join(per_layer_table(p) for p in profiles))
    else:
        print(profiles_table(profiles))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .report import zoo_table
    from .zoo import VARIANTS

    if args.json:
        print(json.dumps([vars(v) for v in VARIANTS.values()], indent=2))
    else:
        print(zoo_table(args.resolution))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import save
    from .convert import convert

    options = {k: v for k, v in (("padding", args.padding), ("bn_eps", args.bn_eps)) if v is not None}
    result = convert(args.src, args.source, args.arch, **options)
    path = save(result.model, args.output, provenance=result.provenance)
    model = result.model
    pre = model.preprocessing
    print(
        f"wrote {path}: {model.arch}, {model.num_classes} classes, padding={model.padding}, bn_eps={model.bn_eps}, "
        f"input mean={pre.mean} std={pre.std}"
        + (" (dropped the background class)" if result.provenance.get("dropped_background_class") else "")
    )
    return 0


TRAIN_FIELDS = (
    "model",
    "weights",
    "epochs",
    "batch_size",
    "image_size",
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


def cmd_train(args: argparse.Namespace) -> int:
    from .train import config_from_recipe, fit, load_config

    if args.resume:
        config = load_config(args.resume)
        print(f"resuming {args.resume} ({config.model} on {config.data}, {config.epochs} epochs)")
        result = fit(config, resume=True, progress=not args.quiet)
    else:
        if not args.data or not args.out:
            raise ValueError("train needs DATA and --out RUN (or --resume RUN)")
        fields = {name: getattr(args, name) for name in TRAIN_FIELDS}
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


def _print_run_summary(result) -> None:
    print(f"best val top-1 {result.best_top1:.1%} after {result.epochs_run} epochs; run folder {result.run}/")
    if result.bad_files:
        print(f"skipped {len(result.bad_files)} unreadable files (listed in {result.run}/report.json)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    out = args.out or (
        Path(args.source) / "eval" if Path(args.source).is_dir() else Path(args.source).with_suffix("")
    )
    result = evaluate(args.source, args.data, out=out, batch_size=args.batch_size, workers=args.workers)
    print(f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  on {result.samples} images")
    from .report import format_table

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
    print(f"wrote {out}/evaluation.json and {out}/confusion.png")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from .data import BadFile
    from .evaluate import predict

    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow(
            ["path", *[f"{kind}{i + 1}" for i in range(args.top_k) for kind in ("class", "prob")]]
        )
    bad = 0
    for item in predict(
        args.source, args.target, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers
    ):
        if isinstance(item, BadFile):
            bad += 1
            print(f"skipping {item.reason}", file=sys.stderr)
            continue
        if args.json:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, epochs=args.epochs, quiet=args.quiet)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "executorch":
        from .executorch_export import export_executorch

        report = export_executorch(args.source, args.output, quantize=args.int8, resolution=args.resolution)
        print(f"wrote {report.path}: {report.summary}")
        return 0
    from .export import export_onnx

    report = export_onnx(
        args.source,
        args.output,
        resolution=args.resolution,
        opset=args.opset,
        dynamic_batch=not args.static_batch,
    )
    ops = ", ".join(f"{op} {n}" for op, n in sorted(report.op_types.items(), key=lambda kv: -kv[1]))
    print(f"wrote {report.path} (opset {report.opset}, {report.resolution}x{report.resolution}, BN folded)")
    print(
        f"checked with ONNX Runtime: max difference {report.max_abs_diff:.2e} "
        f"({report.relative_diff:.2e} of the largest logit; limit 1e-4)"
    )
    print(f"ops: {ops}; exporter: {report.exporter}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize

    keep = tuple({"se": "/se/", "head": "/head/"}.get(part, part) for part in args.keep_float)
    report = quantize(
        args.model,
        args.output,
        args.calibration,
        method=args.method,
        per_channel=not args.per_tensor,
        keep_float=keep,
        max_images=args.max_images,
        labelled=args.labelled,
        reduce_range=not args.full_range_weights,
        percentile=args.percentile,
    )
    print(
        f"wrote {report.path}: int8 QDQ ({report.weight_bits}-bit weights), calibrated on "
        f"{report.calibration_images} images ({report.method})"
        + (f", {len(report.kept_float)} nodes kept in float" if report.kept_float else "")
    )
    print(f"top-1 agreement with fp32 on the calibration images: {report.agreement:.2%}")
    if report.int8_top1 is not None:
        print(
            f"on {report.labelled_images} labelled images: fp32 top-1 {report.fp32_top1:.2%}, int8 top-1 "
            f"{report.int8_top1:.2%}, agreement {report.labelled_agreement:.2%}"
        )
    for message in report.bad_files[:10]:
        print(f"skipped {message}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import benchmark, machine_info, timings_json, timings_markdown, zoo_latency_plot

    if args.zoo_plot:
        points = zoo_latency_plot(args.zoo_plot, args.threads, args.resolution)
        print(f"wrote {args.zoo_plot} ({len(points)} models)")
        if not args.source:
            return 0
    if not args.source:
        raise ValueError("bench needs MODEL|FILE (or --zoo-plot PNG)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [int(b) for b in args.batch.split(",")]
    timings = benchmark(
        args.source, backends, batches, args.threads, args.resolution, args.calibration, args.runs
    )
    info = machine_info(args.threads)
    if args.json:
        print(json.dumps({"machine": info, "timings": timings_json(timings)}, indent=2))
    else:
        print("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")
        print(timings_markdown(timings))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import make_figures

    model = None
    if args.model:
        from .export import resolve_model

        model = resolve_model(args.model)
    paths = make_figures(args.output, latency=not args.no_latency, model=model)
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """NumPy only: nothing here imports torch, onnx or onnxruntime."""
    import numpy as np

    from .runtime import OnnxModel
    from .runtime.image import preprocess, read_image

    model = OnnxModel(args.model)
    x = preprocess(read_image(args.image), model.preprocessing, model.resolution)
    logits = model(x)[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    names = model.class_names or [str(i) for i in range(len(logits))]
    for index in np.argsort(-probabilities)[: args.top_k]:
        print(f"{probabilities[index]:7.2%}  {names[index]}")
    return 0


def cmd_compile_c(args: argparse.Namespace) -> int:
    from .codegen import build, generate

    generated = generate(args.model, args.output, resolution=args.resolution, overwrite=args.overwrite)
    print(
        f"wrote {generated.folder}/model.c, model.h, main.c, Makefile: activation arena "
        f"{generated.arena_bytes / 1024:.0f} KiB, weights {generated.weight_bytes / 1024 / 1024:.2f} MiB, "
        f"{generated.classes} classes"
    )
    if args.build:
        binary = build(generated.folder)
        print(f"built {binary} ({binary.stat().st_size / 1024 / 1024:.2f} MiB); run: {binary} IMAGE.ppm")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser(
        "profile",
        help="params and multiply-adds; with no model, the V1 paper's comparison with GoogLeNet and VGG-16",
        description="Count params and multiply-adds (conv + linear; BN, activations, adds and pooling not counted).",
    )
    profile.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="registered name, googlenet, vgg16, or package.module:factory",
    )
    profile.add_argument("--resolution", type=_positive_int, default=224, help="input size (default 224)")
    profile.add_argument(
        "--per-layer", action="store_true", help="each layer, and each depthwise separable pair"
    )
    profile.add_argument(
        "--json", action="store_true", help="a JSON list of {name, resolution, params, madds}"
    )
    profile.add_argument(
        "--published", action="store_true", help="every cell of the papers' tables beside the computed value"
    )
    profile.set_defaults(func=cmd_profile)

    convert = commands.add_parser(
        "convert",
        help="convert torchvision / timm / Keras weights into a native .safetensors checkpoint",
        description="Convert weights into our definition; the logits match the source model's.",
    )
    convert.add_argument(
        "src", help="weights file: .pth/.pt/.bin/.safetensors (torch), .h5/.keras/.weights.h5 (Keras)"
    )
    convert.add_argument("--from", dest="source", required=True, choices=["torchvision", "timm", "keras"])
    convert.add_argument(
        "--arch",
        required=True,
        help="our model name, or the source's (mobilenet_v3_large, tf_mobilenetv3_small_100)",
    )
    convert.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    convert.add_argument("--padding", choices=["symmetric", "same"], help="override the source's padding")
    convert.add_argument("--bn-eps", type=float, help="override the source's BatchNorm epsilon")
    convert.set_defaults(func=cmd_convert)

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
    train.add_argument("--model")
    train.add_argument("--weights", help="torchvision, keras, timm, or a .safetensors checkpoint")
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument(
        "--batch-size", type=_positive_int, help="global batch (split across torchrun processes)"
    )
    train.add_argument("--image-size", type=_positive_int)
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

    evaluate = commands.add_parser(
        "evaluate", help="top-1/top-5, per-class precision/recall, confusion matrix"
    )
    evaluate.add_argument("source", metavar="RUN|CKPT")
    evaluate.add_argument(
        "data", metavar="DATA", help="labelled folder (its val/ split if it has one), or 'demo'"
    )
    evaluate.add_argument("--out", help="where evaluation.json and confusion.png go (default RUN/eval)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=64)
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="top-k classes for an image or every image under a folder")
    predict.add_argument("source", metavar="RUN|CKPT")
    predict.add_argument("target", metavar="IMAGE|DIR")
    predict.add_argument("--top-k", type=_positive_int, default=5)
    fmt = predict.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true")
    predict.add_argument("--batch-size", type=_positive_int, default=32)
    predict.add_argument("--workers", type=int, default=2)
    predict.set_defaults(func=cmd_predict)

    demo = commands.add_parser(
        "demo", help="the end-to-end demo: numbers, train on the demo data, evaluate, predict"
    )
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--epochs", type=_positive_int)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    export = commands.add_parser(
        "export",
        help="export to ONNX (checked against PyTorch with ONNX Runtime) or ExecuTorch",
        description="Export a checkpoint, run folder or registered model. Every ONNX export is verified.",
    )
    export.add_argument("source", metavar="CKPT|RUN|MODEL")
    export.add_argument("-o", "--output", required=True)
    export.add_argument("--format", choices=["onnx", "executorch"], default="onnx")
    export.add_argument(
        "--resolution", type=_positive_int, help="input size (default: the checkpoint's crop)"
    )
    export.add_argument("--opset", type=int, default=18)
    export.add_argument(
        "--static-batch", action="store_true", help="fix the batch size to 2 (default: dynamic)"
    )
    export.add_argument("--int8", action="store_true", help="ExecuTorch: quantize with the XNNPACK quantizer")
    export.set_defaults(func=cmd_export)

    quantize = commands.add_parser(
        "quantize", help="int8 static quantization of an ONNX model (ONNX Runtime, QDQ)"
    )
    quantize.add_argument("model", metavar="MODEL.onnx")
    quantize.add_argument("--calibration", required=True, metavar="DIR", help="images to calibrate with")
    quantize.add_argument("-o", "--output", required=True)
    quantize.add_argument(
        "--labelled", metavar="DIR", help="class sub-folders: report fp32 and int8 accuracy"
    )
    quantize.add_argument("--method", choices=["percentile", "minmax", "entropy"], default="percentile")
    quantize.add_argument(
        "--percentile",
        type=float,
        default=99.999,
        help="with --method percentile: the share of each activation's values the range must hold",
    )
    quantize.add_argument(
        "--per-tensor", action="store_true", help="per-tensor weights (default per-channel)"
    )
    quantize.add_argument(
        "--keep-float",
        nargs="*",
        default=[],
        metavar="PART",
        help="keep these in float: 'se' (squeeze-excite), 'head', or node-name fragments",
    )
    quantize.add_argument("--max-images", type=_positive_int, default=300)
    quantize.add_argument(
        "--full-range-weights",
        action="store_true",
        help="8-bit weights (default 7: x86 CPUs without VNNI saturate int16 sums of full-range products)",
    )
    quantize.set_defaults(func=cmd_quantize)

    bench = commands.add_parser(
        "bench", help="latency and throughput on torch / onnxruntime / openvino backends"
    )
    bench.add_argument(
        "source", nargs="?", metavar="MODEL|FILE", help="registered name, checkpoint, run, or .onnx"
    )
    bench.add_argument(
        "--backends",
        default="torch,torch-fused,onnxruntime",
        help="comma list of torch, torch-fused, onnxruntime, onnxruntime-int8, openvino, openvino-int8, executorch",
    )
    bench.add_argument("--batch", default="1,32", help="comma list of batch sizes")
    bench.add_argument("--threads", type=_positive_int, default=2)
    bench.add_argument("--resolution", type=_positive_int, default=224)
    bench.add_argument("--runs", type=_positive_int, default=30, help="timed runs per case (at least)")
    bench.add_argument(
        "--calibration", metavar="DIR", help="images for the int8 backends (default: demo images)"
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--zoo-plot", metavar="PNG", help="also plot latency against MAdds for every registered model"
    )
    bench.set_defaults(func=cmd_bench)

    figures = commands.add_parser(
        "figures", help="the talk's figures, computed from the library, as PNG files"
    )
    figures.add_argument("-o", "--output", required=True, metavar="DIR")
    figures.add_argument(
        "--model", help="model for the SE-gates figure (default: runs/demo if trained, else random)"
    )
    figures.add_argument("--no-latency", action="store_true", help="skip timing the zoo (about a minute)")
    figures.set_defaults(func=cmd_figures)

    run = commands.add_parser(
        "run", help="classify an image with an ONNX model, NumPy only (no torch, no onnxruntime)"
    )
    run.add_argument("model", metavar="MODEL.onnx")
    run.add_argument("image", metavar="IMAGE", help="PPM/PGM natively; other formats need Pillow")
    run.add_argument("--top-k", type=_positive_int, default=5)
    run.set_defaults(func=cmd_run)

    compile_c = commands.add_parser(
        "compile-c", help="generate dependency-free C99 (weights, static arena, main)"
    )
    compile_c.add_argument("model", metavar="MODEL.onnx")
    compile_c.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    compile_c.add_argument("--resolution", type=_positive_int, help="for models exported with a dynamic size")
    compile_c.add_argument("--build", action="store_true", help="also run make (-O3 -march=native)")
    compile_c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (only model.c, model.h, main.c, Makefile are replaced)",
    )
    compile_c.set_defaults(func=cmd_compile_c)

    models = commands.add_parser("models", help="the registered variants with their params, MAdds and top-1")
    models.add_argument("--resolution", type=_positive_int, default=224)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:  # CheckpointError is a ValueError
        print(f"mobilenets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:  # an optional package (executorch, openvino, onnx ...) not installed
        package = getattr(error, "name", None)
        print(
            f"mobilenets {args.command}: error: {error}"
            + (
                f" (pip install {package.split('.')[0]})"
                if package and "pip install" not in str(error)
                else ""
            ),
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # `mobilenets run ... | head`: the reader has gone, which is not an error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # Python's final flush goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["build_parser", "main"]
