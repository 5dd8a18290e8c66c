"""The commands for NumPy-only inference and C generation: nothing here imports torch: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse

from .arguments import positive_int


def cmd_run(args: argparse.Namespace) -> int:
    """NumPy only: nothing here imports torch, onnx or onnxruntime."""
    import numpy as np

    from ..runtime import OnnxModel
    from ..runtime.image import preprocess, read_image

    model = OnnxModel(args.model)
    x = preprocess(read_image(args.image), model.preprocessing, model.resolution)
    logits = model(x)[0].astype(np.float64)
    if logits.ndim != 1:
        raise ValueError(
            f"{args.model} outputs a {logits.shape} array per image (a segmentation or detection model?); "
            "`mobilenets run` prints the classes of a classifier; read all outputs with "
            "mobilenets.runtime.OnnxModel(path).run(x)"
        )
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    names = model.class_names or [str(i) for i in range(len(logits))]
    for index in np.argsort(-probabilities)[: args.top_k]:
        print(f"{probabilities[index]:7.2%}  {names[index]}")
    return 0


def add_run(commands) -> None:
    run = commands.add_parser(
        "run", help="classify an image with an ONNX model, NumPy only (no torch, no onnxruntime)"
    )
    run.add_argument("model", metavar="MODEL.onnx")
    run.add_argument("image", metavar="IMAGE", help="PPM/PGM natively; other formats need Pillow")
    run.add_argument("--top-k", type=positive_int, default=5)
    run.set_defaults(func=cmd_run)


def cmd_compile_c(args: argparse.Namespace) -> int:
    from ..codegen import build, generate

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


def add_compile_c(commands) -> None:
    compile_c = commands.add_parser(
        "compile-c", help="generate dependency-free C99 (weights, static arena, main)"
    )
    compile_c.add_argument("model", metavar="MODEL.onnx")
    compile_c.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    compile_c.add_argument("--resolution", type=positive_int, help="for models exported with a dynamic size")
    compile_c.add_argument("--build", action="store_true", help="also run make (-O3 -march=native)")
    compile_c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (only model.c, model.h, main.c, Makefile are replaced)",
    )
    compile_c.set_defaults(func=cmd_compile_c)
