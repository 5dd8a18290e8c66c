"""C99 code generation from an exported ONNX model: no runtime, no malloc, nothing beyond libc and libm.

``generate(model.onnx, OUTDIR)`` writes:

- ``model.c`` / ``model.h``: the weights as ``static const`` arrays (laid out for channels-last loops),
  one ``static float`` activation arena sized by a liveness plan, and ``model_run(input, logits)``;
- ``main.c``: reads a binary PPM (P6), resizes, centre-crops and normalises as the model's metadata says,
  runs the model and prints the top-k with class names (``--logits`` prints every logit,
  ``--raw FILE`` reads a float32 NCHW input instead of an image);
- ``preprocess.h``: the resize, crop and normalisation, shared by main.c and web.c;
- ``web.c``: the exports of a WebAssembly module for a web page (``mobilenets web`` writes the page);
- ``Makefile``: ``make`` builds ``./model`` with ``-O3 -march=native``; ``make portable`` with ``-O2``;
  ``make wasm`` builds ``model.wasm`` (clang for wasm32 with SIMD128, wasi-libc).

Activations are NHWC: a 1x1 convolution is then a loop over input channels whose innermost loop runs
over contiguous output channels, and a depthwise convolution's innermost loop runs over contiguous
channels; both vectorise. Batch size 1 (what microcontrollers and phones run).

The plan comes from :mod:`.plan`; this module turns it into text, with strings and numbers from the
file passing through :mod:`.literals` only. The kernels, main.c and the Makefile are files in csrc/.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..runtime import metadata
from ..runtime.protobuf import OnnxFormatError, parse_model
from .int8plan import Int8Plan, is_quantized
from .int8writer import int8_sources
from .literals import LiteralError, c_comment, c_float, c_string
from .plan import CodegenError, Plan, Tensor, plan_model


def _c_array(name: str, values: np.ndarray) -> str:
    words = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).ravel()
    lines = []
    for start in range(0, len(words), 12):
        lines.append(",".join(f"0x{w:08x}" for w in words[start : start + 12]))
    body = ",\n".join(lines)
    return f"static const union {{ uint32_t u[{len(words)}]; float f[{len(words)}]; }} {name} = {{{{\n{body}\n}}}};\n"


def _call(kind: str, ins: list[Tensor], out: Tensor, d: dict) -> str:
    x, y = f"A + {ins[0].offset}", f"A + {out.offset}"
    act = f"{d.get('act', 0)}, {d.get('lo', '0.0f')}, {d.get('hi', '0.0f')}"
    if kind == "conv1x1":
        return f"conv1x1({x}, {d['ho'] * d['wo']}, {d['c']}, {d['w']}, {d['b']}, {d['m']}, {y}, {act});"
    if kind in ("depthwise", "conv"):
        g = d
        args = (
            f"{x}, {g['h']}, {g['w']}, {g['c']}, {g['wgt']}, {g['b']}, {g['m']}, {g['kh']}, {g['kw']}, "
            f"{g['sh']}, {g['sw']}, {g['dh']}, {g['dw']}, {g['pt']}, {g['pl']}, {g['ho']}, {g['wo']}, {y}, {act}"
        )
        return f"{'depthwise' if kind == 'depthwise' else 'conv_general'}({args});"
    n = out.size
    if kind == "Relu":
        return f"relu({x}, {y}, {n});"
    if kind == "HardSwish":
        return f"hard_swish({x}, {y}, {n});"
    if kind == "HardSigmoid":
        return f"hard_sigmoid({x}, {y}, {n}, {d['alpha']}, {d['beta']});"
    if kind == "Clip":
        return f"clip({x}, {y}, {n}, {d['low']}, {d['high']});"
    if kind == "Identity":
        return "" if ins[0].offset == out.offset else f"memmove({y}, {x}, sizeof(float) * {n});"
    if kind in ("Mul", "Add"):
        op = "*" if kind == "Mul" else "+"
        return f"for (int i = 0; i < {n}; i++) A[{out.offset} + i] = A[{ins[0].offset} + i] {op} A[{ins[1].offset} + i];"
    if kind in ("Mul_channel", "Add_channel"):
        op = "mul" if kind == "Mul_channel" else "add"
        c = ins[0].shape[1]
        return f"channel_{op}({x}, A + {ins[1].offset}, {ins[0].size // c}, {c}, {y});"
    if kind == "mean":
        return f"spatial_mean({x}, {d['hw']}, {d['c']}, {y});"
    if kind == "to_nchw":
        return f"to_nchw({x}, {d['hw']}, {d['c']}, {y});"
    if kind == "gemm":
        return f"gemm({x}, {d['n_in']}, {d['w']}, {d['b']}, {d['n_out']}, {y});"
    raise AssertionError(kind)


def _calls(plan: Plan) -> list[str]:
    return [
        _call(kind, [plan.tensors[n] for n in ins], plan.tensors[out], d) for kind, ins, out, d in plan.steps
    ]


# The C itself lives in csrc/ as real files (package data): readable, and compiled on their own by the
# tests. kernels.c's includes sit above the marker because model.c already has them.
KERNELS_MARKER = "/* MOBILENETS_KERNELS_BEGIN */"


def c_source(name: str) -> str:
    """A file of csrc/ (kernels.c, main.c, Makefile.template) as text."""
    return resources.files(__package__).joinpath("csrc", name).read_text(encoding="utf-8")


def kernels() -> str:
    """The float kernels as model.c embeds them: kernels.c after its marker."""
    return c_source("kernels.c").split(KERNELS_MARKER, 1)[1]


@dataclass
class GeneratedC:
    folder: Path
    arena_bytes: int
    weight_bytes: int
    classes: int
    int8: bool = False
    ram_bytes: int = 0  # arena plus the int8 kernels' accumulator row
    input_shape: tuple[int, ...] = ()  # (1, C, H, W)


INT8_FILES = ("model_io.c", "mcu_main.c", "test_input.h", "startup.c", "sections.ld", "m4.ld", "m55.ld")
GENERATED_FILES = ("model.c", "model.h", "main.c", "preprocess.h", "web.c", "Makefile", *INT8_FILES)
BUILT_FILES = (
    "model",
    "model_portable",
    "libmodel.so",
    "test-host",
    "model_m4.o",
    "model_m55.o",
    "model_m4.elf",
    "model_m55.elf",
    "model.wasm",
)
BANNER = "/* Generated by mobilenets compile-c"


def check_folder(
    out: Path, overwrite: bool, marker: str, banner: str, ours: tuple[str, ...], by: str
) -> None:
    """Refuse to write into a folder that holds anything but an earlier output of ``by`` (its ``marker``
    file starts with ``banner`` and every entry is in ``ours``): a user's Makefile, notes, another
    project; unless ``overwrite``, and even then only our files are replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CodegenError(f"{out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or overwrite:
        return
    written = (out / marker).is_file() and (out / marker).read_text(errors="replace").startswith(banner)
    foreign = [name for name in entries if name not in ours]
    if not written or foreign:
        shown = ", ".join((foreign or entries)[:5]) + (" ..." if len(foreign or entries) > 5 else "")
        raise CodegenError(
            f"{out} is not empty and was not written by {by} (it holds {shown}): choose a new folder, or "
            f"pass --overwrite to replace the generated files there ({', '.join(ours[:4])}, ...)"
        )


def check_output_folder(out: Path, overwrite: bool = False) -> None:
    """compile-c's folder: new, empty or an earlier compile-c output (see :func:`check_folder`)."""
    check_folder(out, overwrite, "model.h", BANNER, GENERATED_FILES + BUILT_FILES, "compile-c")


def generate(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int | None = None,
    overwrite: bool = False,
    int8: bool | None = None,
    max_ram: int | None = None,
    max_flash: int | None = None,
) -> GeneratedC:
    """Write model.c, model.h, main.c and a Makefile into ``out`` (see the module docstring); a QDQ
    file from ``mobilenets quantize`` gets integer-only C (``int8=True`` insists on one). Everything is
    planned and checked before the first file is written, including ``max_ram`` (the activation arena and
    accumulator row) and ``max_flash`` (the weights), in bytes; ``out`` must be new, empty or an earlier
    compile-c output (``overwrite`` lifts that)."""
    out = Path(out)
    check_output_folder(out, overwrite)
    try:  # parsed once: the int8 check and the plan share it
        proto = parse_model(Path(onnx_path).read_bytes())
    except OnnxFormatError as error:
        raise CodegenError(f"{onnx_path}: {error}") from None
    if int8 and not is_quantized(proto):
        raise CodegenError(
            f"{onnx_path} is not an int8 QDQ model: make one with `mobilenets quantize {onnx_path} -o "
            "MODEL.int8.onnx --calibration IMAGES`"
        )
    try:
        sources = _sources(Path(onnx_path), proto, resolution)
    except (LiteralError, metadata.MetadataError) as error:
        raise CodegenError(f"{onnx_path}: {error}") from None
    plan = sources.pop("plan")
    _check_budget(plan, onnx_path, max_ram, max_flash)
    out.mkdir(parents=True, exist_ok=True)
    # A float model over our own int8 output leaves no stale int8 files; a user's files are never removed.
    header = out / "model.h"
    previous = header.read_text(errors="replace") if header.is_file() else ""
    if previous.startswith(BANNER) and "(int8)" in previous.splitlines()[0]:
        for name in INT8_FILES:
            if name not in sources and (out / name).is_file():
                (out / name).unlink()
    for name, text in sources.items():
        (out / name).write_text(text)
    int8 = isinstance(plan, Int8Plan)
    arena = plan.arena_floats * (1 if int8 else 4)
    return GeneratedC(
        out, arena, plan.weight_bytes, plan.output_size, int8, plan.ram_bytes, tuple(plan.input_shape)
    )


def _check_budget(plan: Plan, onnx_path, max_ram: int | None, max_flash: int | None) -> None:
    ram, flash = plan.ram_bytes, plan.weight_bytes
    problems = []
    if max_ram is not None and ram > max_ram:
        problems.append(
            f"RAM {ram:,} bytes (activation arena and accumulators) exceeds --max-ram {max_ram:,}"
        )
    if max_flash is not None and flash > max_flash:
        problems.append(
            f"flash {flash:,} bytes (the weights alone, before code) exceeds --max-flash {max_flash:,}"
        )
    if problems:
        hint = (
            ""
            if isinstance(plan, Int8Plan)
            else "; an int8 model (mobilenets quantize) needs a quarter of both"
        )
        raise CodegenError(f"{onnx_path}: " + "; ".join(problems) + hint)


def _sources(onnx_path: Path, proto, resolution: int | None) -> dict:
    """The files' texts (and the plan under "plan"); nothing from the file reaches them unescaped. A QDQ
    file (int8, from ``mobilenets quantize``) gets the integer-only C of :mod:`.int8writer`."""
    if is_quantized(proto):
        return int8_sources(onnx_path, proto, resolution, c_source, BANNER)
    plan, meta = plan_model(onnx_path, resolution, proto)
    _, c, h, w = plan.input_shape
    names = metadata.class_names(meta)
    pre = metadata.preprocessing(meta, channels=c)
    classes = plan.output_size
    source = c_comment(onnx_path.name)
    resize = max(h, int(round(h / (pre["crop"] / pre["resize"]))))
    header = f"""{BANNER} from {source}. C99, no malloc. */
#ifndef MOBILENETS_MODEL_H
#define MOBILENETS_MODEL_H
#define MODEL_INPUT_CHANNELS {c}
#define MODEL_INPUT_HEIGHT {h}
#define MODEL_INPUT_WIDTH {w}
#define MODEL_CLASSES {classes}
#define MODEL_ARENA_BYTES {plan.arena_floats * 4}
#define MODEL_RESIZE {resize}
extern const float model_mean[{c}], model_std[{c}];
extern const char *const model_class_names[MODEL_CLASSES];
/* input: NCHW float32, normalised; logits: MODEL_CLASSES floats. Not reentrant (one static arena). */
void model_run(const float *input, float *logits);
#endif
"""
    labels = names if names and len(names) == classes else [str(i) for i in range(classes)]
    body = [
        f"{BANNER} from {source}. */",
        "#include <math.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        '#include "model.h"',
        f"const float model_mean[{c}] = {{{', '.join(c_float(v) for v in pre['mean'])}}};",
        f"const float model_std[{c}] = {{{', '.join(c_float(v) for v in pre['std'])}}};",
        "const char *const model_class_names[MODEL_CLASSES] = {"
        + ", ".join(c_string(s) for s in labels)
        + "};",
        f"static float A[{plan.arena_floats}];  /* the activation arena, sized by the liveness plan */",
        kernels(),
    ]
    body += [_c_array(symbol, values) for symbol, values in plan.weights]
    body.append("void model_run(const float *input, float *logits) {")
    body.append(f"    float *x = A + {plan.input_offset};  /* NCHW in, NHWC inside */")
    body.append(
        f"    for (int ch = 0; ch < {c}; ch++) for (int p = 0; p < {h * w}; p++) x[p * {c} + ch] = input[ch * {h * w} + p];"
    )
    body += [f"    {call}" for call in _calls(plan) if call]
    body.append(f"    memcpy(logits, A + {plan.output_offset}, sizeof(float) * {classes});")
    body.append("}")
    return {
        "plan": plan,
        "model.h": header,
        "model.c": "\n".join(body) + "\n",
        "main.c": c_source("main.c"),
        "preprocess.h": c_source("preprocess.h"),
        "web.c": c_source("web.c"),
        "Makefile": c_source("Makefile.template"),
    }


def build(folder: Path, target: str = "model", cc: str | None = None, cflags: str | None = None) -> Path:
    """Run make in ``folder``; returns the built file. ``cflags`` replaces the Makefile's CFLAGS (for
    example ``-O3 -march=haswell -std=c99``, to build for another instruction set than this CPU's)."""
    compiler = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise CodegenError("no C compiler found (set CC)")
    options = [f"CFLAGS={cflags}"] if cflags is not None else []
    result = subprocess.run(
        ["make", "-s", target, f"CC={compiler}", *options], cwd=folder, capture_output=True, text=True
    )
    if result.returncode:
        raise CodegenError(f"building {target} in {folder} failed:\n{result.stderr[-2000:]}")
    return folder / ("model_portable" if target == "portable" else target)


def build_shared_library(onnx_path: Path, folder: Path, cflags: str | None = None):
    """Generate, build libmodel.so and return a callable ``f(x: (1, C, H, W) float32) -> logits``."""
    generated = generate(onnx_path, folder)
    library = ctypes.CDLL(str(build(folder, "libmodel.so", cflags=cflags)))  # int8: model_io.c's float door
    library.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    logits = np.empty(generated.classes, np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        library.model_run(x.ctypes.data, logits.ctypes.data)
        return logits.copy()[None]

    return run
