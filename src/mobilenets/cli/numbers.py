"""The commands for params, multiply-adds, the papers' tables and the figures: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .arguments import positive_int, resolution_arg


def cmd_profile(args: argparse.Namespace) -> int:
    from ..numbers.profile import profile_module
    from ..numbers.report import per_layer_table, profiles_table, resolve_module, talk_table

    if args.published:
        from ..numbers.report import published_table

        print(published_table())
        return 0
    if not args.models:
        if args.json:
            from ..numbers.published import profile_named
            from ..numbers.report import TALK_MODELS

            print(json.dumps([profile_named(m).summary() for _, m in TALK_MODELS], indent=2))
        else:
            print(talk_table())
        return 0
    profiles = []
    for spec in args.models:
        label, module = resolve_module(spec, args.num_classes, args.reduced_tail)
        minimum = getattr(module, "min_resolution", 1)
        smallest = args.resolution if isinstance(args.resolution, int) else min(args.resolution)
        if smallest < minimum:
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


def add_profile(commands) -> None:
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
    profile.add_argument(
        "--resolution", type=resolution_arg, default=224, help="input size, N or HxW (default 224)"
    )
    profile.add_argument(
        "--num-classes", type=positive_int, help="classes (default 1000; 21 for segmentation)"
    )
    profile.add_argument(
        "--reduced-tail", action="store_true", help="V3's RF2: the last stage at half width (Table 7)"
    )
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


def cmd_models(args: argparse.Namespace) -> int:
    from ..nn.registry import VARIANTS
    from ..numbers.report import zoo_table

    if args.json:
        print(json.dumps([vars(v) for v in VARIANTS.values()], indent=2))
    else:
        print(zoo_table(args.resolution))
    return 0


def add_models(commands) -> None:
    models = commands.add_parser("models", help="the registered variants with their params, MAdds and top-1")
    models.add_argument("--resolution", type=positive_int, default=224)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)


def cmd_figures(args: argparse.Namespace) -> int:
    from ..data.demo import CLASSES, image
    from ..deploy.bench import zoo_latency_plot
    from ..deploy.export import resolve_model
    from ..numbers.figures import make_figures

    # The SE gates are drawn for the trained demo model when there is one, for a circle and a star.
    demo = Path("runs/demo/best.safetensors")
    model = resolve_model(args.model or (demo if demo.exists() else "mobilenet_v3_small_100"))
    images = [image("val", CLASSES.index(kind))[0] for kind in ("circle", "star")]
    paths = make_figures(args.output, model, images)
    if not args.no_latency:
        paths["latency_madds"] = Path(args.output) / "latency_madds.png"
        zoo_latency_plot(paths["latency_madds"], threads=2)
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0


def add_figures(commands) -> None:
    figures = commands.add_parser(
        "figures", help="the talk's figures, computed from the library, as PNG files"
    )
    figures.add_argument("-o", "--output", required=True, metavar="DIR")
    figures.add_argument(
        "--model", help="model for the SE-gates figure (default: runs/demo if trained, else random)"
    )
    figures.add_argument("--no-latency", action="store_true", help="skip timing the zoo (about a minute)")
    figures.set_defaults(func=cmd_figures)
