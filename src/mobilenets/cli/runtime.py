"""The commands for NumPy-only inference and C generation: nothing here imports torch: parsers and the functions they call (imports are lazy)."""

from __future__ import annotations

import argparse

from .arguments import byte_size, positive_int


def cmd_run(args: argparse.Namespace) -> int:
    """NumPy only: nothing here imports torch, onnx or onnxruntime."""
    import numpy as np

    from ..runtime import OnnxModel
    from ..runtime.image import preprocess, read_image

    model = OnnxModel(args.model)
    if model.outputs[:2] == ["boxes", "scores"]:  # an exported SSDLite
        return _print_detections(model, args)
    x = preprocess(read_image(args.image), model.preprocessing, model.resolution)
    logits = model(x)[0].astype(np.float64)
    if logits.ndim != 1:
        raise ValueError(
            f"{args.model} outputs a {logits.shape} array per image (a segmentation model?); "
            "`mobilenets run` prints the classes of a classifier; read all outputs with "
            "mobilenets.runtime.OnnxModel(path).run(x)"
        )
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    names = model.class_names or [str(i) for i in range(len(logits))]
    for index in np.argsort(-probabilities)[: args.top_k]:
        print(f"{probabilities[index]:7.2%}  {names[index]}")
    return 0


def _print_detections(model, args: argparse.Namespace) -> int:
    """A detector's boxes above --score-threshold in the image's pixels, best first: from the graph's own
    NonMaxSuppression (``export --nms``), else from the runner's NonMaxSuppression op (IoU 0.55)."""
    import numpy as np

    from ..runtime.image import preprocess, read_image
    from ..runtime.ops import NonMaxSuppression

    pixels = read_image(args.image)
    size = model.resolution
    x = preprocess(pixels, model.preprocessing, size, whole=True)
    outputs = model.run(x)
    boxes, scores = outputs[0][0], outputs[1][0]
    if len(outputs) > 2:
        selected = outputs[2]
    else:  # background left out, as export --nms leaves it out
        selected = NonMaxSuppression(
            outputs[0],
            outputs[1][:, :, 1:].transpose(0, 2, 1),
            np.array([100]),
            np.array([0.55]),
            np.array([0.0]),
        ) + np.array([0, 1, 0])
    names = model.class_names or [str(i) for i in range(scores.shape[1])]
    height, width = pixels.shape[:2]
    scale = np.array([width / size, height / size, width / size, height / size])
    found = [(float(scores[i, c]), int(c), boxes[i] * scale) for _, c, i in selected.tolist()]
    found = sorted((f for f in found if f[0] > args.score_threshold), key=lambda f: -f[0])
    for score, label, box in found:
        print(f"{score:7.2%}  {names[label]}  [{', '.join(f'{v:.1f}' for v in box)}]")
    if not found:
        print(f"no detection above {args.score_threshold}")
    return 0


def add_run(commands) -> None:
    run = commands.add_parser(
        "run",
        help="classify an image (or find its objects, for a detector) with an ONNX model, NumPy only (no torch, no onnxruntime)",
    )
    run.add_argument("model", metavar="MODEL.onnx")
    run.add_argument("image", metavar="IMAGE", help="PPM/PGM natively; other formats need Pillow")
    run.add_argument("--top-k", type=positive_int, default=5)
    run.add_argument(
        "--score-threshold", type=float, default=0.3, help="detectors: the lowest score printed (default 0.3)"
    )
    run.set_defaults(func=cmd_run)


def cmd_compile_c(args: argparse.Namespace) -> int:
    from ..codegen import build, generate

    generated = generate(
        args.model,
        args.output,
        resolution=args.resolution,
        overwrite=args.overwrite,
        int8=args.int8,
        max_ram=args.max_ram,
        max_flash=args.max_flash,
    )
    kind = "int8, integer only" if generated.int8 else "float"
    print(
        f"wrote {generated.folder}/model.c, model.h, main.c, preprocess.h, web.c, Makefile ({kind}): RAM "
        f"{generated.ram_bytes / 1024:.1f} KiB (activation arena {generated.arena_bytes / 1024:.1f} KiB), "
        f"weights {generated.weight_bytes / 1024:.1f} KiB, {generated.classes} classes"
    )
    if generated.int8:
        print(
            "  make test-host: the microcontroller program here; make cortex-m4 / cortex-m55: "
            "Cortex-M images; make qemu-m4 / qemu-m55: run them in QEMU"
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
        "--int8",
        action="store_true",
        help="insist on integer-only C (the model must be a QDQ file from mobilenets quantize; such a file "
        "gets integer C without the flag too)",
    )
    compile_c.add_argument(
        "--max-ram", type=byte_size, metavar="SIZE", help="fail if arena + accumulators exceed SIZE (64K, 1M)"
    )
    compile_c.add_argument(
        "--max-flash", type=byte_size, metavar="SIZE", help="fail if the weights exceed SIZE"
    )
    compile_c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (only the generated files are replaced)",
    )
    compile_c.set_defaults(func=cmd_compile_c)


def cmd_web(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..codegen import write_site

    source = Path(args.source)
    with tempfile.TemporaryDirectory(prefix="mobilenets-web-") as work:
        if source.suffix == ".onnx" and source.is_file():
            onnx_path, name = source, source.stem
        else:  # a run folder, checkpoint or registered model: export first (needs torch and onnx)
            from ..deploy.export import export_onnx

            name = source.name.removesuffix(".safetensors") or str(args.source)
            onnx_path = export_onnx(args.source, Path(work) / "model.onnx", resolution=args.resolution).path
        site = write_site(
            onnx_path, args.output, resolution=args.resolution, overwrite=args.overwrite, name=name
        )
    kind = "int8" if site.int8 else "float32"
    print(
        f"wrote {site.folder}/index.html, app.js, model.json, model.wasm ({kind}, {site.classes} classes): "
        f"model.wasm {site.wasm_bytes / 1024:.0f} KiB, the page downloads {site.page_bytes / 1024:.0f} KiB"
    )
    print(f"  serve it: python -m http.server -d {site.folder} 8000, then open http://localhost:8000")
    return 0


def add_web(commands) -> None:
    web = commands.add_parser(
        "web",
        help="a static web page that classifies images with the model as WebAssembly (the generated C)",
        description="Generate the C, build it for WebAssembly (clang, lld, wasi-libc) and write a static "
        "page (index.html, app.js, model.wasm, model.json) that classifies a picked image or the camera's "
        "frames in the browser. Serve the folder with any static file server.",
    )
    web.add_argument(
        "source",
        metavar="MODEL.onnx|RUN|CKPT|MODEL",
        help="an ONNX file (float or int8), or what export takes",
    )
    web.add_argument("-o", "--output", required=True, metavar="SITE")
    web.add_argument("--resolution", type=positive_int, help="input size (default: the model's)")
    web.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (only the site's are replaced)",
    )
    web.set_defaults(func=cmd_web)
