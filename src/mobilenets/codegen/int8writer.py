"""The int8 C: the texts of an int8 model's files, from :mod:`.int8plan`'s plan.

- ``model.c``: integer only (no float type anywhere): the int8 weights, int32 biases and per-channel
  Q31 multipliers and shifts as ``static const`` arrays (flash), one ``static int8_t`` arena sized by
  the liveness plan (RAM), the kernels of csrc/kernels_int8.c, and ``model_run_int8(input, logits)``;
- ``model_io.c``: the float door for hosts: ``model_run(float input, float logits)`` quantizes the input
  with the model's input scale and zero point and dequantizes the logits (main.c and libmodel.so use it);
- ``mcu_main.c`` + ``test_input.h``: the microcontroller program, a compiled-in test image (integer
  only); ``startup.c`` and the linker scripts for QEMU's Cortex-M4 (mps2-an386) and Cortex-M55
  (mps3-an547) boards; the Makefile's targets build and run them.

``model.h`` states the flash (weights) and RAM (arena + accumulator row) the model needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime import metadata
from .int8plan import ARENA_SLACK, Int8Plan, pixel_block, plan_int8, ring_rows
from .literals import c_comment, c_float, c_string
from .plan import Tensor

C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}


def _c_array(name: str, values: np.ndarray) -> str:
    c_type = C_TYPES[values.dtype]
    flat = values.ravel()
    lines = [",".join(str(int(v)) for v in flat[start : start + 32]) for start in range(0, len(flat), 32)]
    return f"static const {c_type} {name}[{len(flat)}] = {{\n" + ",\n".join(lines) + "\n};\n"


def _multiplier(pair: tuple[int, int]) -> str:
    return f"{pair[0]}, {pair[1]}"


def _call(kind: str, ins: list[Tensor], out: Tensor, d: dict) -> str:
    x, y = f"A + {ins[0].offset}", f"A + {out.offset}"
    requant = f"{d.get('mult')}, {d.get('shift')}"
    clamp = f"{d.get('low')}, {d.get('high')}"
    if kind == "conv1x1":
        return (
            f"q_conv1x1({x}, {d['ho'] * d['wo']}, {d['c']}, {d['wgt']}, {d['b']}, {d['wsum']}, {requant}, {d['m']}, {y}, "
            f"{d['zy']}, {clamp}, R, {pixel_block(d) if out.alias else 0});"
        )
    if kind in ("depthwise", "conv"):
        geometry = (
            f"{d['kh']}, {d['kw']}, {d['sh']}, {d['sw']}, {d['dh']}, {d['dw']}, {d['pt']}, {d['pl']}, "
            f"{d['ho']}, {d['wo']}, {y}, {d['zx']}, {d['zy']}, {clamp}"
        )
        head = f"{x}, {d['h']}, {d['w']}, {d['c']}, {d['wgt']}, {d['b']}, {requant}"
        if kind == "depthwise":
            ring = ring_rows(d) if out.alias else 0  # in place: the output overwrites the input
            return f"q_depthwise({head}, {geometry}, S, R, {ring});"
        return f"q_conv({head}, {d['wsum']}, {d['m']}, {geometry}, R);"
    if kind == "table":
        return f"q_table({x}, {d['table']}, {d['n']}, {y});"
    if kind == "add":
        return (
            f"q_add({x}, A + {ins[1].offset}, {d['n']}, {d['za']}, {d['zb']}, {d['ma']}, {d['mb']}, "
            f"{d['total']}, {d['zy']}, {clamp}, {y});"
        )
    if kind == "mul":
        return (
            f"q_mul({x}, A + {ins[1].offset}, {d['n']}, {d['channels']}, {d['za']}, {d['zb']}, "
            f"{_multiplier(d['m'])}, {d['zy']}, {clamp}, {y});"
        )
    if kind == "mean":
        return f"q_mean({x}, {d['hw']}, {d['c']}, {d['zx']}, {_multiplier(d['m'])}, {d['zy']}, {y}, S);"
    raise AssertionError(kind)


# Built with -DMODEL_TRACE, model_trace (a function pointer the caller sets) sees every step's int8
# output (NHWC) as it is made, and may change it: a test compares each step with ONNX Runtime's and
# then writes ONNX Runtime's values in, so that one difference cannot spread into the next steps.
TRACE_HOOK = """#ifdef MODEL_TRACE
void (*model_trace)(int step, const char *name, int8_t *values, int count) = 0;
#define TRACE(step, name, values, count) if (model_trace) model_trace(step, name, values, count)
#else
#define TRACE(step, name, values, count)
#endif"""


def int8_sources(onnx_path: Path, proto, resolution: int | None, c_source, banner: str) -> dict:
    """Every file's text (and the plan under "plan"); nothing from the file reaches them unescaped."""
    plan, meta = plan_int8(onnx_path, resolution, proto)
    _, c, h, w = plan.input_shape
    names = metadata.class_names(meta)
    pre = metadata.preprocessing(meta, channels=c)
    classes = plan.output_size
    labels = names if names and len(names) == classes else [str(i) for i in range(classes)]
    source = c_comment(onnx_path.name)
    resize = max(h, int(round(h / (pre["crop"] / pre["resize"]))))
    header = f"""{banner} from {source} (int8). C99, no malloc, no float on the inference path. */
#ifndef MOBILENETS_MODEL_H
#define MOBILENETS_MODEL_H
#include <stdint.h>
#define MODEL_INT8 1
#define MODEL_INPUT_CHANNELS {c}
#define MODEL_INPUT_HEIGHT {h}
#define MODEL_INPUT_WIDTH {w}
#define MODEL_CLASSES {classes}
#define MODEL_RESIZE {resize}
/* Memory: weights, biases, multipliers and tables are static const (flash); the arena and one row of
 * int32 accumulators are the RAM the model needs. */
#define MODEL_FLASH_WEIGHT_BYTES {plan.weight_bytes}
#define MODEL_ARENA_BYTES {plan.arena_floats}
#define MODEL_RAM_BYTES {plan.ram_bytes}
/* Quantization of the input and the logits: real = scale * (q - zero). */
#define MODEL_INPUT_SCALE {c_float(plan.input_scale)}
#define MODEL_INPUT_ZERO {plan.input_zero}
#define MODEL_OUTPUT_SCALE {c_float(plan.output_scale)}
#define MODEL_OUTPUT_SCALE_TEXT "{plan.output_scale:.9g}"
#define MODEL_OUTPUT_ZERO {plan.output_zero}
extern const char *const model_class_names[MODEL_CLASSES];
/* input: NCHW int8, quantized; logits: MODEL_CLASSES int8. Not reentrant (one static arena). */
void model_run_int8(const int8_t *input, int8_t *logits);
/* model_io.c (hosts): float NCHW normalised input in, float logits out. */
extern const float model_mean[{c}], model_std[{c}];
void model_run(const float *input, float *logits);
#endif
"""
    body = [
        f"{banner} from {source} (int8). Integer only. */",
        "#include <stdint.h>",
        "#include <string.h>",
        '#include "model.h"',
        "const char *const model_class_names[MODEL_CLASSES] = {"
        + ", ".join(c_string(s) for s in labels)
        + "};",
        # Slack: the 1x1 kernel reads its input rows four bytes at a time (weights are zero past the row's
        # end, but the bytes read must exist).
        f"static int8_t A[{plan.arena_floats + ARENA_SLACK}];  /* the activation arena (liveness plan) */",
        f"static int32_t S[{max(plan.scratch_ints, 1)}];  /* one row of per-channel accumulators */",
        f"static int8_t R[{max(plan.rows_bytes, 1)}];  /* scratch: the stem's patches, in-place rings and blocks */",
        c_source("kernels_int8.c").split("/* MOBILENETS_KERNELS_BEGIN */", 1)[1],
    ]
    body += [_c_array(symbol, values) for symbol, values in plan.weights]
    body.append(TRACE_HOOK)
    body.append("void model_run_int8(const int8_t *input, int8_t *logits) {")
    body.append(f"    int8_t *x = A + {plan.input_offset};  /* NCHW in, NHWC inside */")
    body.append(
        f"    for (int ch = 0; ch < {c}; ch++) for (int p = 0; p < {h * w}; p++) x[p * {c} + ch] = input[ch * {h * w} + p];"
    )
    for index, (kind, ins, out, d) in enumerate(plan.steps):
        tensor = plan.tensors[out]
        body.append(f"    {_call(kind, [plan.tensors[n] for n in ins], tensor, d)}")
        body.append(f"    TRACE({index}, {c_string(out)}, A + {tensor.offset}, {tensor.size});")
    body.append(f"    memcpy(logits, A + {plan.output_offset}, {classes});")
    body.append("}")
    io = f"""{banner} from {source} (int8): the float door for hosts. */
#include <math.h>
#include <stdint.h>
#include "model.h"
const float model_mean[{c}] = {{{", ".join(c_float(v) for v in pre["mean"])}}};
const float model_std[{c}] = {{{", ".join(c_float(v) for v in pre["std"])}}};
static int8_t quantized_input[{c * h * w}];
static int8_t quantized_logits[MODEL_CLASSES];
/* As ONNX QuantizeLinear: round half to even (nearbyintf in the default rounding mode), saturate. */
void model_run(const float *input, float *logits) {{
    for (int i = 0; i < {c * h * w}; i++) {{
        float q = nearbyintf(input[i] / MODEL_INPUT_SCALE) + MODEL_INPUT_ZERO;
        quantized_input[i] = (int8_t)(q < -128.f ? -128.f : (q > 127.f ? 127.f : q));
    }}
    model_run_int8(quantized_input, quantized_logits);
    for (int i = 0; i < MODEL_CLASSES; i++) logits[i] = MODEL_OUTPUT_SCALE * (float)(quantized_logits[i] - MODEL_OUTPUT_ZERO);
}}
"""
    test = _test_input(plan, pre)
    return {
        "plan": plan,
        "model.h": header,
        "model.c": "\n".join(body) + "\n",
        "model_io.c": io,
        "main.c": c_source("main.c"),
        "preprocess.h": c_source("preprocess.h"),
        "web.c": c_source("web.c"),
        "mcu_main.c": c_source("mcu_main.c"),
        "test_input.h": test,
        "startup.c": c_source("cortex_m/startup.c"),
        "sections.ld": c_source("cortex_m/sections.ld"),
        "m4.ld": c_source("cortex_m/m4.ld"),
        "m55.ld": c_source("cortex_m/m55.ld"),
        "Makefile": c_source("Makefile_int8.template"),
    }


def sample_image(channels: int, height: int, width: int) -> np.ndarray:
    """The compiled-in test image, (C, H, W) in [0, 1]: a bright disc on a diagonal gradient, each channel
    shifted, so every layer sees structure (a constant image would leave most activations at one value)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    gradient = (x + y) / max(height + width - 2, 1)
    disc = ((y - 0.4 * height) ** 2 + (x - 0.6 * width) ** 2) < (0.25 * min(height, width)) ** 2
    image = [np.clip(0.8 * gradient + 0.5 * disc * (1 - 0.3 * ch) + 0.1 * ch, 0, 1) for ch in range(channels)]
    return np.stack(image).astype(np.float32)


def quantized_sample_input(plan: Int8Plan, pre: dict) -> np.ndarray:
    """The test image normalised as the model expects and quantized with its input scale (NCHW int8)."""
    _, c, h, w = plan.input_shape
    mean = np.array(pre["mean"], np.float32).reshape(c, 1, 1)
    std = np.array(pre["std"], np.float32).reshape(c, 1, 1)
    normalised = (sample_image(c, h, w) - mean) / std
    q = np.rint(normalised / np.float32(plan.input_scale)) + plan.input_zero
    return np.clip(q, -128, 127).astype(np.int8)


def _test_input(plan: Int8Plan, pre: dict) -> str:
    values = quantized_sample_input(plan, pre).ravel()
    rows = [",".join(str(int(v)) for v in values[i : i + 32]) for i in range(0, len(values), 32)]
    return (
        "/* Generated by mobilenets compile-c: the test image (a disc on a gradient), normalised and\n"
        " * quantized with the model's input scale, NCHW int8. */\n"
        '#define TEST_INPUT_NAME "test image"\n'
        f"static const int8_t test_input[{len(values)}] = {{\n" + ",\n".join(rows) + "\n};\n"
    )
