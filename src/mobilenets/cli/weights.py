"""The commands for weights from torchvision, timm and Keras: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse


def cmd_convert(args: argparse.Namespace) -> int:
    from ..weights.checkpoint import save
    from ..weights.convert import convert

    options = {k: v for k, v in (("padding", args.padding), ("bn_eps", args.bn_eps)) if v is not None}
    result = convert(args.src, args.source, args.arch, **options)
    path = save(result.model, args.output, provenance=result.provenance)
    model, pre = result.model, result.model.preprocessing
    config = model.config
    print(
        f"wrote {path}: {model.arch}, {model.num_classes} classes, padding={config['padding']}, "
        f"bn_eps={config['bn_eps']}, input mean={pre.mean} std={pre.std}"
        + (" (dropped the background class)" if result.provenance.get("dropped_background_class") else "")
    )
    return 0


def add_convert(commands) -> None:
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
