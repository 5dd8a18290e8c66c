"""The ``mobilenets`` command line: a thin argparse layer over the library, no logic of its own."""

from __future__ import annotations

import argparse
import json
import sys


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
    except (ValueError, FileNotFoundError) as error:  # CheckpointError is a ValueError
        print(f"mobilenets {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
