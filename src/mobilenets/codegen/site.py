"""A static web page that classifies images in the browser with the model's generated C built for
WebAssembly (``mobilenets web``): no inference engine to download, no framework, nothing fetched from
elsewhere.

``write_site(model.onnx, SITE)`` generates the C (float, or integer-only for an int8 QDQ file), builds
``model.wasm`` with the generated Makefile's ``make wasm`` (clang for wasm32 with SIMD128, wasi-libc),
and writes:

- ``index.html`` and ``app.js`` (site/ in this package): pick an image or use the camera; the top-5
  with scores and the time per inference;
- ``model.wasm``: weights, kernels and pre-processing (preprocess.h, the same C as the native
  ``./model``'s, so the page and the native build give the model the same input);
- ``model.json``: the class names, the input size and the pre-processing, from the model's metadata.

Everything is generated and built in a temporary folder first: a model the generator cannot compile,
or a missing compiler, fails before the first file of the site is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..runtime import metadata
from ..runtime.protobuf import parse_model
from .plan import CodegenError
from .writer import check_folder, generate

PAGE_FILES = ("index.html", "app.js")
SITE_FILES = (*PAGE_FILES, "model.wasm", "model.json")
PAGE_BANNER = "<!doctype html>\n<!-- Written by mobilenets web"
WASM_PACKAGES = "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32"


@dataclass
class Site:
    folder: Path
    wasm_bytes: int
    page_bytes: int  # everything the page downloads: the four files
    classes: int
    int8: bool


def check_site_folder(out: Path, overwrite: bool = False) -> None:
    """The site's folder: new, empty or an earlier ``mobilenets web`` output (see :func:`.writer.check_folder`)."""
    check_folder(out, overwrite, "index.html", PAGE_BANNER, SITE_FILES, "mobilenets web")


def build_wasm(folder: Path, cc: str | None = None) -> Path:
    """``make wasm`` in a compile-c folder; the error names the packages when the tools are missing."""
    compiler = cc or os.environ.get("WASM_CC") or "clang"
    missing = [tool for tool in (compiler, "wasm-ld") if not shutil.which(tool)]
    if missing:
        raise CodegenError(f"{' and '.join(missing)} not found: WebAssembly needs {WASM_PACKAGES}")
    result = subprocess.run(
        ["make", "-s", "wasm", f"WASM_CC={compiler}"], cwd=folder, capture_output=True, text=True
    )
    if result.returncode:
        raise CodegenError(
            f"building model.wasm in {folder} failed (WebAssembly needs {WASM_PACKAGES}):\n"
            f"{result.stderr[-2000:]}"
        )
    return folder / "model.wasm"


def page_source(name: str) -> str:
    """A file of site/ (index.html, app.js) as text."""
    return resources.files(__package__).joinpath("site", name).read_text(encoding="utf-8")


def write_site(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int | None = None,
    overwrite: bool = False,
    name: str | None = None,
) -> Site:
    """Write the page for ``onnx_path`` into ``out`` (see the module docstring); ``name`` is the page's
    title (default: the file's name without .onnx)."""
    onnx_path, out = Path(onnx_path), Path(out)
    check_site_folder(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="mobilenets-web-") as work:
        try:
            generated = generate(onnx_path, Path(work) / "c", resolution=resolution)
        except CodegenError as error:  # named by its file: the page is not written
            message = str(error)
            raise CodegenError(
                message if message.startswith(str(onnx_path)) else f"{onnx_path}: {message}"
            ) from None
        wasm = build_wasm(generated.folder).read_bytes()
    meta = parse_model(onnx_path.read_bytes()).metadata  # generate() has checked it
    channels = generated.input_shape[1]
    names = metadata.class_names(meta)
    labels = names if names and len(names) == generated.classes else None
    info = {
        "name": name or onnx_path.name.removesuffix(".onnx"),
        "classes": generated.classes,
        "input": list(generated.input_shape[1:]),  # C, H, W
        "int8": generated.int8,
        "preprocessing": metadata.preprocessing(meta, channels=channels),
        "wasm_bytes": len(wasm),
        "labels": labels or [str(i) for i in range(generated.classes)],
    }
    texts = {page: page_source(page) for page in PAGE_FILES}
    texts["model.json"] = json.dumps(info, ensure_ascii=True, indent=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.wasm").write_bytes(wasm)
    for file, text in texts.items():
        (out / file).write_text(text, encoding="utf-8")
    total = sum((out / file).stat().st_size for file in SITE_FILES)
    return Site(out, len(wasm), total, generated.classes, generated.int8)
