"""The commands for export, int8 quantization and benchmarks: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse
import json
import sys

from .arguments import positive_int


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "executorch":
        from ..deploy.executorch import export_executorch

        report = export_executorch(args.source, args.output, quantize=args.int8, resolution=args.resolution)
        print(f"wrote {report.path}: {report.summary}")
        return 0
    from ..deploy.export import export_onnx
    from ..deploy.onnx_nms import NmsSettings

    nms = NmsSettings(args.nms_iou, args.nms_score, args.nms_max) if args.nms else None
    report = export_onnx(
        args.source,
        args.output,
        resolution=args.resolution,
        opset=args.opset,
        dynamic_batch=not args.static_batch,
        nms=nms,
    )
    ops = ", ".join(f"{op} {n}" for op, n in sorted(report.op_types.items(), key=lambda kv: -kv[1]))
    print(f"wrote {report.path} (opset {report.opset}, {report.resolution}x{report.resolution}, BN folded)")
    print(
        f"checked with ONNX Runtime: max difference {report.max_abs_diff:.2e} "
        f"({report.relative_diff:.2e} of the largest logit; limit 1e-4)"
    )
    print(f"ops: {ops}; exporter: {report.exporter}")
    if nms is not None:
        print(
            f"NonMaxSuppression in the graph (IoU {nms.iou_threshold}, score > {nms.score_threshold}, "
            f"{nms.max_per_class} per class): output 'selected' rows (image, class, box), same boxes as torchvision's NMS"
        )
    return 0


def add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export to ONNX (checked against PyTorch with ONNX Runtime) or ExecuTorch",
        description="Export a checkpoint, run folder or registered model. Every ONNX export is verified.",
    )
    export.add_argument("source", metavar="CKPT|RUN|MODEL")
    export.add_argument("-o", "--output", required=True)
    export.add_argument("--format", choices=["onnx", "executorch"], default="onnx")
    export.add_argument("--resolution", type=positive_int, help="input size (default: the checkpoint's crop)")
    export.add_argument("--opset", type=int, default=18)
    export.add_argument(
        "--static-batch", action="store_true", help="fix the batch size to 2 (default: dynamic)"
    )
    export.add_argument("--int8", action="store_true", help="ExecuTorch: quantize with the XNNPACK quantizer")
    export.add_argument(
        "--nms",
        action="store_true",
        help="detection: ONNX NonMaxSuppression in the graph (output 'selected')",
    )
    export.add_argument("--nms-iou", type=float, default=0.55, help="--nms: IoU above which a box is dropped")
    export.add_argument(
        "--nms-score", type=float, default=0.01, help="--nms: scores above this are candidates"
    )
    export.add_argument(
        "--nms-max", type=positive_int, default=100, help="--nms: boxes kept per class and image"
    )
    export.set_defaults(func=cmd_export)


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..deploy.quantize import quantize

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


def add_quantize(commands) -> None:
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
    quantize.add_argument("--max-images", type=positive_int, default=300)
    quantize.add_argument(
        "--full-range-weights",
        action="store_true",
        help="8-bit weights (default 7: x86 CPUs without VNNI saturate int16 sums of full-range products)",
    )
    quantize.set_defaults(func=cmd_quantize)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy.bench import benchmark, machine_info, timings_json, timings_markdown, zoo_latency_plot

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


def add_bench(commands) -> None:
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
    bench.add_argument("--threads", type=positive_int, default=2)
    bench.add_argument("--resolution", type=positive_int, default=224)
    bench.add_argument("--runs", type=positive_int, default=30, help="timed runs per case (at least)")
    bench.add_argument(
        "--calibration", metavar="DIR", help="images for the int8 backends (default: demo images)"
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--zoo-plot", metavar="PNG", help="also plot latency against MAdds for every registered model"
    )
    bench.set_defaults(func=cmd_bench)
