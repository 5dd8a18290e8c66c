"""C99 code generation from an exported ONNX model: no runtime, no malloc, nothing beyond libc and libm.

``generate(model.onnx, OUTDIR)`` writes:

- ``model.c`` / ``model.h``: the weights as ``static const`` arrays (laid out for channels-last loops),
  one ``static float`` activation arena sized by a liveness plan, and ``model_run(input, logits)``;
- ``main.c``: reads a binary PPM (P6), resizes, centre-crops and normalises as the model's metadata says,
  runs the model and prints the top-k with class names (``--logits`` prints every logit,
  ``--raw FILE`` reads a float32 NCHW input instead of an image);
- ``Makefile``: ``make`` builds ``./model`` with ``-O3 -march=native``; ``make portable`` with ``-O2``.

Activations are NHWC: a 1x1 convolution is then a loop over input channels whose innermost loop runs
over contiguous output channels, and a depthwise convolution's innermost loop runs over contiguous
channels; both vectorise. Batch size 1 (what microcontrollers and phones run).

This module reads ONNX with the NumPy runner's own protobuf reader: it needs no onnx package.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime import metadata
from ..runtime.protobuf import parse_model
from .literals import LiteralError, c_comment, c_float, c_string

SUPPORTED = (
    "Conv",
    "Relu",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Mul",
    "Add",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Gemm",
    "Identity",
)


class CodegenError(ValueError):
    """The graph holds something the generator does not support; the message names the node."""


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # NCHW logical shape (batch 1)
    offset: int = -1  # in the arena, in floats
    alias: str | None = None  # computed in place over another tensor

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Plan:
    calls: list[str] = field(default_factory=list)
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)
    arena_floats: int = 0
    input_shape: tuple[int, ...] = ()
    input_offset: int = 0
    output_offset: int = 0
    output_size: int = 0
    widest_mean: int = 0  # channels of the widest spatial mean (its kernel keeps a 4096-float sum)


def _pack_panels(matrix: np.ndarray) -> np.ndarray:
    """(cout, cin) 1x1 weights as the conv1x1 kernel reads them: column panels of width 16 (then one of
    8, then the rest), each stored [cin][width] and contiguous, one after the other."""
    cout = matrix.shape[0]
    panels, start = [], 0
    while start < cout:
        width = 16 if cout - start >= 16 else (8 if cout - start >= 8 else cout - start)
        panels.append(matrix[start : start + width].T.ravel())
        start += width
    return np.concatenate(panels)


def _c_array(name: str, values: np.ndarray) -> str:
    words = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).ravel()
    lines = []
    for start in range(0, len(words), 12):
        lines.append(",".join(f"0x{w:08x}" for w in words[start : start + 12]))
    body = ",\n".join(lines)
    return f"static const union {{ uint32_t u[{len(words)}]; float f[{len(words)}]; }} {name} = {{{{\n{body}\n}}}};\n"


# Attributes each op may carry (anything else is refused: an attribute we ignored would change the answer).
ATTRIBUTES = {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "Relu": set(),
    "Clip": {"min", "max"},  # attributes before opset 11, inputs from 11
    "HardSigmoid": {"alpha", "beta"},
    "HardSwish": set(),
    "Mul": set(),
    "Add": set(),
    "GlobalAveragePool": set(),
    "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "Flatten": {"axis"},
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "Identity": set(),
}
MAX_ARENA_BYTES = 1 << 30  # the kernels index with int; a file declaring a bigger input is refused
MAX_SIDE = 16384


def _ints(value, count: int, low: int, where: str, name: str) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) != count
        or any(not isinstance(v, int) or v < low for v in value)
    ):
        raise CodegenError(f"{where}: {name} must be {count} whole numbers >= {low}, got {value!r:.60}")
    return value


def _input_shape(graph, init, resolution: int | None) -> tuple[str, tuple[int, int, int, int]]:
    inputs = [i for i in graph.inputs if i.name not in init]
    if len(inputs) != 1:
        raise CodegenError(f"the C generator needs exactly one graph input, the model has {len(inputs)}")
    shape = list(inputs[0].shape)
    if len(shape) != 4:
        raise CodegenError(
            f"input {inputs[0].name!r} has shape {shape}: the C generator needs a 4-D NCHW image input"
        )

    if isinstance(shape[0], int) and shape[0] not in (0, 1):  # 0: an unset dimension in old files
        raise CodegenError(f"input {inputs[0].name!r} has batch {shape[0]}: the generated C runs batch 1")

    def size(axis: int, fallback):
        value = shape[axis] if isinstance(shape[axis], int) and shape[axis] > 0 else fallback
        if value is None:
            raise CodegenError("the model's input size is dynamic: pass a resolution")
        if not 1 <= value <= MAX_SIDE:
            raise CodegenError(
                f"input {inputs[0].name!r}: dimension {axis} = {value} is outside 1..{MAX_SIDE}"
            )
        return value

    return inputs[0].name, (1, size(1, 3), size(2, resolution), size(3, resolution))


def _plan(path: Path, resolution: int | None) -> tuple[Plan, dict]:
    proto = parse_model(Path(path).read_bytes())
    graph = proto.graph
    init = graph.initializers
    input_name, input_shape = _input_shape(graph, init, resolution)
    tensors: dict[str, Tensor] = {input_name: Tensor(input_name, input_shape)}
    plan = Plan(input_shape=input_shape)
    steps: list[tuple[str, list[str], str, dict]] = []  # (kind, input names, output name, details)

    def weight(name: str, array: np.ndarray) -> str:
        symbol = f"w{len(plan.weights)}"
        plan.weights.append((symbol, array))
        return f"{symbol}.f"

    for node in graph.nodes:
        where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
        if node.op_type not in SUPPORTED or node.domain not in ("", "ai.onnx"):
            raise CodegenError(
                f"{where}: op {node.op_type} is not supported by the C generator; supported: "
                f"{', '.join(SUPPORTED)}"
            )
        unknown = set(node.attributes) - ATTRIBUTES[node.op_type]
        if unknown:
            raise CodegenError(f"{where}: attribute(s) {', '.join(sorted(unknown))} not supported")
        if len(node.outputs) != 1 or not node.outputs[0]:
            raise CodegenError(f"{where}: needs exactly one output, has {len(node.outputs)}")

        def value(index: int, node=node, where=where) -> Tensor:
            name = node.inputs[index] if index < len(node.inputs) else ""
            if name in tensors:
                return tensors[name]
            if name in init:
                raise CodegenError(f"{where}: a constant operand ({name!r}) is not supported here")
            raise CodegenError(
                f"{where}: input {index} ({name!r}) is not made by an earlier node nor a graph input"
            )

        def constant(index: int, what: str, node=node, where=where) -> np.ndarray | None:
            if index >= len(node.inputs) or not node.inputs[index]:
                return None
            if node.inputs[index] not in init:
                raise CodegenError(f"{where}: the {what} ({node.inputs[index]!r}) must be an initializer")
            return init[node.inputs[index]]

        a = node.attributes
        out = node.outputs[0]
        if out in tensors:
            raise CodegenError(f"{where}: value {out!r} is made twice")
        if node.op_type == "Conv":
            x = value(0)
            w = constant(1, "weights")
            if w is None or w.ndim != 4 or 0 in w.shape or len(x.shape) != 4:
                raise CodegenError(
                    f"{where}: needs a 4-D input and 4-D weights (got {x.shape} and "
                    f"{None if w is None else w.shape})"
                )
            _, c, h, wd = x.shape
            m, cg, kh, kw = w.shape
            b = constant(2, "bias")
            if b is None:
                b = np.zeros(m, np.float32)
            elif b.shape != (m,):
                raise CodegenError(f"{where}: bias shape {b.shape} does not match {m} output channels")
            sh, sw = _ints(a.get("strides", [1, 1]), 2, 1, where, "strides")
            dh, dw = _ints(a.get("dilations", [1, 1]), 2, 1, where, "dilations")
            top, left, bottom, right = _ints(a.get("pads", [0, 0, 0, 0]), 4, 0, where, "pads")
            if "kernel_shape" in a and list(a["kernel_shape"]) != [kh, kw]:
                raise CodegenError(
                    f"{where}: kernel_shape {a['kernel_shape']} disagrees with weights {w.shape}"
                )
            if a.get("auto_pad", "NOTSET") != "NOTSET":
                raise CodegenError(f"{where}: auto_pad is not supported (export with explicit pads)")
            group = a.get("group", 1)
            ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
            wo = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
            if ho < 1 or wo < 1:
                raise CodegenError(f"{where}: a {kh}x{kw} kernel does not fit the {h}x{wd} input")
            tensors[out] = Tensor(out, (1, m, ho, wo))
            geometry = dict(
                h=h, w=wd, c=c, m=m, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=top, pl=left, ho=ho, wo=wo
            )
            if group == 1 and cg != c:
                raise CodegenError(
                    f"{where}: weights {w.shape} expect {cg} input channels, the input has {c}"
                )
            if group == 1 and kh == kw == 1 and sh == sw == 1 and not (top or left or bottom or right):
                steps.append(
                    (
                        "conv1x1",
                        [x.name],
                        out,
                        dict(geometry, w=weight(out, _pack_panels(w.reshape(m, c))), b=weight(out, b)),
                    )
                )
            elif group == c and cg == 1 and m == c:
                steps.append(
                    (
                        "depthwise",
                        [x.name],
                        out,
                        dict(
                            geometry,
                            wgt=weight(out, w.reshape(c, kh, kw).transpose(1, 2, 0)),
                            b=weight(out, b),
                        ),
                    )
                )
            elif group == 1:
                steps.append(
                    (
                        "conv",
                        [x.name],
                        out,
                        dict(geometry, wgt=weight(out, w.transpose(2, 3, 1, 0)), b=weight(out, b)),
                    )
                )
            else:
                raise CodegenError(
                    f"{where}: grouped convolution with group={group} (weights {w.shape}, {c} input "
                    "channels) is not supported"
                )
        elif node.op_type in ("Relu", "HardSwish", "HardSigmoid", "Clip", "Identity"):
            x = value(0)
            tensors[out] = Tensor(out, x.shape)
            if node.op_type == "HardSigmoid":
                details = dict(
                    alpha=c_float(a.get("alpha", 0.2), f"{where}: alpha"),
                    beta=c_float(a.get("beta", 0.5), f"{where}: beta"),
                )
            elif node.op_type == "Clip":
                bounds = []
                for index, key, default in ((1, "min", -np.inf), (2, "max", np.inf)):
                    bound = constant(index, key)
                    if bound is not None and bound.size != 1:
                        raise CodegenError(f"{where}: {key} must be a scalar, got shape {bound.shape}")
                    bound = a.get(key, default) if bound is None else bound.item()
                    bounds.append(c_float(bound, f"{where}: {key}", allow_infinite=True))
                details = dict(low=bounds[0], high=bounds[1])
            else:
                details = {}
            steps.append((node.op_type, [x.name], out, details))
        elif node.op_type in ("Mul", "Add"):
            if len(node.inputs) != 2:
                raise CodegenError(f"{where}: needs two inputs")
            first, second = value(0), value(1)
            big, small = (first, second) if first.size >= second.size else (second, first)
            tensors[out] = Tensor(out, big.shape)
            if small.shape == big.shape:
                steps.append((node.op_type, [big.name, small.name], out, {}))
            elif len(big.shape) == 4 and small.shape == (1, big.shape[1], 1, 1):
                steps.append((node.op_type + "_channel", [big.name, small.name], out, {}))
            else:
                raise CodegenError(f"{where}: broadcast {big.shape} with {small.shape} is not supported")
        elif node.op_type in ("GlobalAveragePool", "ReduceMean"):
            x = value(0)
            axes = constant(1, "axes")
            axes = (
                axes.tolist()
                if axes is not None
                else a.get("axes", [2, 3] if node.op_type == "GlobalAveragePool" else [])
            )
            if len(x.shape) != 4 or sorted(int(v) % 4 for v in axes) != [2, 3] or not a.get("keepdims", 1):
                raise CodegenError(f"{where}: only a spatial mean of a 4-D tensor with keepdims is supported")
            tensors[out] = Tensor(out, (1, x.shape[1], 1, 1))
            steps.append(("mean", [x.name], out, dict(hw=x.shape[2] * x.shape[3], c=x.shape[1])))
        elif node.op_type == "Flatten":
            x = value(0)
            if a.get("axis", 1) % max(len(x.shape), 1) not in (0, 1):
                raise CodegenError(f"{where}: only axis 0 or 1 is supported (batch 1), got {a.get('axis')}")
            tensors[out] = Tensor(out, (1, x.size))
            # NHWC inside, NCHW meant: a spatial tensor is put back in ONNX's order; (1, C, 1, 1) is the same.
            spatial = len(x.shape) == 4 and x.shape[2] * x.shape[3] > 1
            steps.append(
                ("to_nchw", [x.name], out, dict(hw=x.shape[2] * x.shape[3], c=x.shape[1]))
                if spatial
                else ("Identity", [x.name], out, {})
            )
        elif node.op_type == "Gemm":
            x = value(0)
            b_matrix = constant(1, "B matrix")
            bias = constant(2, "C (bias)")
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise CodegenError(f"{where}: only Gemm with transA=0, alpha=beta=1 is supported")
            if b_matrix is None or b_matrix.ndim != 2:
                raise CodegenError(f"{where}: B must be a 2-D initializer")
            matrix = b_matrix if a.get("transB", 0) else b_matrix.T  # (out, in)
            n_out, n_in = matrix.shape
            if x.shape != (1, n_in):
                raise CodegenError(f"{where}: input shape {x.shape} does not match B {b_matrix.shape}")
            if bias is None:
                bias = np.zeros(n_out, np.float32)
            elif bias.size == 1 or bias.shape in ((n_out,), (1, n_out)):
                bias = np.broadcast_to(bias.reshape(-1), (n_out,))
            else:
                raise CodegenError(f"{where}: bias shape {bias.shape} does not broadcast to ({n_out},)")
            tensors[out] = Tensor(out, (1, n_out))
            steps.append(
                (
                    "gemm",
                    [x.name],
                    out,
                    dict(
                        n_in=n_in,
                        n_out=n_out,
                        w=weight(out, matrix.T),  # [in][out] for the row-update kernel
                        b=weight(out, bias),
                    ),
                )
            )
    if not graph.outputs or graph.outputs[0].name not in tensors:
        raise CodegenError("the graph's first output is not made by any node")
    output_name = graph.outputs[0].name
    if output_name == input_name:
        raise CodegenError("the graph's output is its input")
    steps = _fuse_activations(steps, output_name)
    _assign_arena(tensors, steps, input_name, output_name, plan)
    if plan.arena_floats * 4 > MAX_ARENA_BYTES:
        raise CodegenError(
            f"the model needs an activation arena of {plan.arena_floats * 4 / 2**20:.0f} MiB; the C "
            f"generator's limit is {MAX_ARENA_BYTES >> 20} MiB"
        )
    plan.input_offset, plan.output_offset = tensors[input_name].offset, tensors[output_name].offset
    plan.output_size = tensors[output_name].size
    plan.widest_mean = max((d["c"] for kind, _, _, d in steps if kind == "mean"), default=0)
    if plan.widest_mean > 4096:
        raise CodegenError(f"a spatial mean over {plan.widest_mean} channels exceeds the generator's 4096")
    for kind, ins, out, d in steps:
        plan.calls.append(_call(kind, [tensors[n] for n in ins], tensors[out], d))
    return plan, proto.metadata


ACTIVATION_CODES = {"Relu": 1, "Clip": 2, "HardSwish": 3}


def _fuse_activations(steps, output_name):
    """A conv whose only consumer is a ReLU / Clip / HardSwish applies it before storing: one pass less."""
    consumers: dict[str, int] = {}
    for _, ins, _, _ in steps:
        for name in ins:
            consumers[name] = consumers.get(name, 0) + 1
    fused, skip = [], set()
    for index, (kind, ins, out, details) in enumerate(steps):
        if index in skip:
            continue
        following = steps[index + 1] if index + 1 < len(steps) else None
        if (
            kind in ("conv1x1", "depthwise", "conv")
            and following
            and following[0] in ACTIVATION_CODES
            and following[1] == [out]
            and consumers.get(out) == 1
            and out != output_name
        ):
            act_kind, _, act_out, act_details = following
            details = dict(
                details,
                act=ACTIVATION_CODES[act_kind],
                lo=act_details.get("low", "0.0f"),
                hi=act_details.get("high", "0.0f"),
            )
            fused.append((kind, ins, act_out, details))
            skip.add(index + 1)
        else:
            fused.append((kind, ins, out, details))
    return fused


def _assign_arena(tensors, steps, input_name, output_name, plan) -> None:
    """Unary elementwise ops run in place when their input dies there; the rest get first-fit offsets
    over their lifetimes (birth step .. last use)."""
    last_use = {input_name: 0}
    for index, (_, ins, out, _) in enumerate(steps):
        for name in ins:
            last_use[name] = index
        last_use.setdefault(out, index)
    last_use[output_name] = len(steps)
    birth = {input_name: -1}
    for index, (kind, ins, out, _) in enumerate(steps):
        birth[out] = index
        if kind in ("Relu", "HardSwish", "HardSigmoid", "Clip", "Identity") and last_use[ins[0]] == index:
            tensors[out].alias = ins[0]
            last_use[ins[0]] = last_use[out] = max(last_use.get(out, index), index)

    def root(name):
        while tensors[name].alias:
            name = tensors[name].alias
        return name

    spans: dict[str, list[int]] = {}
    for name in birth:
        r = root(name)
        span = spans.setdefault(r, [birth[r], birth[r]])
        span[1] = max(span[1], last_use.get(name, birth[name]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    for r in sorted(spans, key=lambda n: -tensors[n].size):
        start, end = spans[r]
        size = (tensors[r].size + 15) // 16 * 16  # 64-byte aligned
        offset = 0
        for o, s, a, b in sorted(placed):
            overlaps_time = not (end < a or b < start)
            if overlaps_time and offset < o + s and o < offset + size:
                offset = o + s
        placed.append((offset, size, start, end))
        tensors[r].offset = offset
        plan.arena_floats = max(plan.arena_floats, offset + size)
    for name, tensor in tensors.items():
        if tensor.alias:
            tensor.offset = tensors[root(name)].offset


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


KERNELS = r"""
/* Kernels: activations are NHWC, batch 1. All static inline: a model uses some of them, and -Wall
 * does not warn about the inline ones it leaves unused. */
/* With GCC / Clang the hot kernels use vector extensions (8 floats = one AVX register, two SSE / NEON
 * registers); any other C99 compiler, or -DMOBILENETS_NO_VECTOR_EXTENSIONS, gets the plain loops. */
#if defined(__GNUC__) && !defined(MOBILENETS_NO_VECTOR_EXTENSIONS)
#define MOBILENETS_VECTORS 1
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  /* unaligned loads and stores */
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))
#endif

/* Activations fused into the convolutions' stores: 0 none, 1 ReLU, 2 clip(lo, hi), 3 h-swish. */
static inline float act_s(float v, int act, float lo, float hi) {
    if (act == 1) return v > 0.f ? v : 0.f;
    if (act == 2) { v = v < lo ? lo : v; return v > hi ? hi : v; }
    if (act == 3) { float g = v * (1.f / 6.f) + 0.5f; g = g < 0.f ? 0.f : g; g = g > 1.f ? 1.f : g; return v * g; }
    return v;
}
#ifdef MOBILENETS_VECTORS
typedef int v8i __attribute__((vector_size(32)));
static inline v8 vmax(v8 a, v8 b) { v8i m = a > b; return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v8 vmin(v8 a, v8 b) { v8i m = a < b; return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v8 splat(float v) { v8 r = {v, v, v, v, v, v, v, v}; return r; }
static inline v8 act_v(v8 v, int act, float lo, float hi) {
    if (act == 1) return vmax(v, splat(0.f));
    if (act == 2) return vmin(vmax(v, splat(lo)), splat(hi));
    if (act == 3) return v * vmin(vmax(v * (1.f / 6.f) + 0.5f, splat(0.f)), splat(1.f));
    return v;
}
#define ST(p, v) STORE((p), act_v((v), act, lo, hi))
#endif

/* 1x1 convolution = (pixels x cin) . (cin x cout). The weights come packed in column panels, each
 * [cin][width] and contiguous (widths 16, 16, ..., then 8, then the rest; see _pack_panels), so a panel
 * streams through the cache in order. Pixels go in tiles whose rows stay in L2 while every panel passes
 * over them; the vector path is a register micro-kernel: 6 pixels x 16 output channels of accumulators
 * live in registers for the whole loop over input channels (one broadcast and two FMAs per pixel and
 * input channel), the register blocking of GotoBLAS / BLIS for 16 AVX registers. */
static inline void conv1x1(const float *restrict x, int pixels, int cin, const float *restrict w,
                           const float *restrict b, int cout, float *restrict y, int act, float lo, float hi) {
    int tile = (16384 / (cin > 0 ? cin : 1)) / 6 * 6; /* 64 KiB of input rows */
    if (tile < 6) tile = 6;
    for (int t0 = 0; t0 < pixels; t0 += tile) {
        const int t1 = t0 + tile < pixels ? t0 + tile : pixels;
        for (int o0 = 0; o0 < cout;) {
            const int width = cout - o0 >= 16 ? 16 : (cout - o0 >= 8 ? 8 : cout - o0);
            const float *panel = w + (size_t)o0 * cin;
            int p0 = t0;
#ifdef MOBILENETS_VECTORS
            if (width == 16) {
                for (; p0 + 6 <= t1; p0 += 6) {
                    const float *x0 = x + (size_t)p0 * cin;
                    const v8 bl = LOAD(b + o0), bh = LOAD(b + o0 + 8);
                    v8 a0l = bl, a0h = bh, a1l = bl, a1h = bh, a2l = bl, a2h = bh, a3l = bl, a3h = bh, a4l = bl, a4h = bh, a5l = bl, a5h = bh;
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 16) {
                        const v8 wl = LOAD(wi), wh = LOAD(wi + 8);
                        float s;
                        s = x0[i]; a0l += s * wl; a0h += s * wh;
                        s = x0[cin + i]; a1l += s * wl; a1h += s * wh;
                        s = x0[2 * cin + i]; a2l += s * wl; a2h += s * wh;
                        s = x0[3 * cin + i]; a3l += s * wl; a3h += s * wh;
                        s = x0[4 * cin + i]; a4l += s * wl; a4h += s * wh;
                        s = x0[5 * cin + i]; a5l += s * wl; a5h += s * wh;
                    }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, a0l); ST(yp + 8, a0h); yp += cout;
                    ST(yp, a1l); ST(yp + 8, a1h); yp += cout;
                    ST(yp, a2l); ST(yp + 8, a2h); yp += cout;
                    ST(yp, a3l); ST(yp + 8, a3h); yp += cout;
                    ST(yp, a4l); ST(yp + 8, a4h); yp += cout;
                    ST(yp, a5l); ST(yp + 8, a5h);
                }
                for (; p0 < t1; p0++) {
                    const float *x0 = x + (size_t)p0 * cin;
                    v8 al = LOAD(b + o0), ah = LOAD(b + o0 + 8);
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 16) { al += x0[i] * LOAD(wi); ah += x0[i] * LOAD(wi + 8); }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, al); ST(yp + 8, ah);
                }
            } else if (width == 8) {
                for (; p0 + 6 <= t1; p0 += 6) {
                    const float *x0 = x + (size_t)p0 * cin;
                    const v8 bv = LOAD(b + o0);
                    v8 a0 = bv, a1 = bv, a2 = bv, a3 = bv, a4 = bv, a5 = bv;
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 8) {
                        const v8 wv = LOAD(wi);
                        a0 += x0[i] * wv; a1 += x0[cin + i] * wv; a2 += x0[2 * cin + i] * wv;
                        a3 += x0[3 * cin + i] * wv; a4 += x0[4 * cin + i] * wv; a5 += x0[5 * cin + i] * wv;
                    }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, a0); ST(yp + cout, a1); ST(yp + 2 * cout, a2);
                    ST(yp + 3 * cout, a3); ST(yp + 4 * cout, a4); ST(yp + 5 * cout, a5);
                }
                for (; p0 < t1; p0++) {
                    const float *x0 = x + (size_t)p0 * cin;
                    v8 acc = LOAD(b + o0);
                    for (int i = 0; i < cin; i++) acc += x0[i] * LOAD(panel + (size_t)i * 8);
                    ST(y + (size_t)p0 * cout + o0, acc);
                }
            }
#endif
            for (; p0 < t1; p0++) { /* the portable path, and the last < 8 output channels */
                const float *xp = x + (size_t)p0 * cin;
                float *yp = y + (size_t)p0 * cout + o0;
                for (int o = 0; o < width; o++) yp[o] = b[o0 + o];
                for (int i = 0; i < cin; i++) {
                    const float a = xp[i];
                    const float *wi = panel + (size_t)i * width;
                    for (int o = 0; o < width; o++) yp[o] += a * wi[o];
                }
                for (int o = 0; o < width; o++) yp[o] = act_s(yp[o], act, lo, hi);
            }
            o0 += width;
        }
    }
}

#ifdef MOBILENETS_VECTORS
/* Border handling for the blocked kernels: output columns [*lo, *hi) read only input columns inside the
 * image; for output row oh, kernel rows [*lo, *hi) fall inside it. */
static inline void inner_columns(int w, int kw, int sw, int dw, int pl, int wo, int *lo, int *hi) {
    int first = (pl + sw - 1) / sw, last = w - 1 - (kw - 1) * dw + pl;
    last = last < 0 ? 0 : last / sw + 1;
    if (last > wo) last = wo;
    *lo = first > last ? last : first;
    *hi = last;
}
static inline void inner_rows(int oh, int h, int kh, int sh, int dh, int pt, int *lo, int *hi) {
    int first = 0, end = kh;
    while (first < kh && oh * sh - pt + first * dh < 0) first++;
    while (end > first && oh * sh - pt + (end - 1) * dh >= h) end--;
    *lo = first;
    *hi = end;
}
#endif

/* Depthwise, weights [kh][kw][c]. One output pixel, every channel: accumulators stay in registers
 * across the taps that fall inside the image (the border pixels, and the portable path). */
static inline void depthwise_pixel(const float *restrict x, int h, int w, int c, const float *restrict k,
                                   const float *restrict b, int kh, int kw, int sh, int sw, int dh, int dw,
                                   int pt, int pl, int oh, int ow, float *restrict yp, int act, float lo, float hi) {
    int c0 = 0;
#ifdef MOBILENETS_VECTORS
    for (; c0 + 8 <= c; c0 += 8) {
        v8 acc = LOAD(b + c0);
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                acc += LOAD(x + ((size_t)ih * w + iw) * c + c0) * LOAD(k + ((size_t)i * kw + j) * c + c0);
            }
        }
        ST(yp + c0, acc);
    }
#endif
    for (; c0 < c; c0++) {
        float acc = b[c0];
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                acc += x[((size_t)ih * w + iw) * c + c0] * k[((size_t)i * kw + j) * c + c0];
            }
        }
        yp[c0] = act_s(acc, act, lo, hi);
    }
}

#ifdef MOBILENETS_VECTORS
/* 4 neighbouring output pixels x every channel, 8 channels at a time, all taps inside the image; xr points
 * at the input pixel under tap (0, 0) of the first output pixel. Always inlined so that kw and dw are
 * constants. Each weight vector is loaded once for 4 pixels (1.25 loads per FMA instead of 2), and 4
 * accumulators leave the registers for the row pointers. */
static inline __attribute__((always_inline)) void depthwise_4(
    const float *restrict xr, int w, int c, const float *restrict k, const float *restrict b, int i_lo, int i_hi,
    int dh, const int kw, const int dw, int sw, float *restrict yp, int act, float lo, float hi) {
    const size_t step = (size_t)sw * c, row = (size_t)dh * w * c;
    int c0 = 0;
    for (; c0 + 8 <= c; c0 += 8) {
        v8 a0 = LOAD(b + c0), a1 = a0, a2 = a0, a3 = a0;
        for (int i = i_lo; i < i_hi; i++) {
            const float *q0 = xr + i * row + c0, *q1 = q0 + step, *q2 = q1 + step, *q3 = q2 + step;
            const float *ki = k + (size_t)i * kw * c + c0;
            for (int j = 0; j < kw; j++) {
                const size_t at = (size_t)j * dw * c;
                const v8 kv = LOAD(ki + (size_t)j * c);
                a0 += LOAD(q0 + at) * kv; a1 += LOAD(q1 + at) * kv; a2 += LOAD(q2 + at) * kv; a3 += LOAD(q3 + at) * kv;
            }
        }
        ST(yp + c0, a0); ST(yp + c + c0, a1); ST(yp + 2 * c + c0, a2); ST(yp + 3 * c + c0, a3);
    }
}
#endif

/* Depthwise convolution. Inside the image (every tap of a row in bounds) the vector path computes 4
 * neighbouring output pixels at once (depthwise_4); the border pixels go through depthwise_pixel. */
static inline void depthwise(const float *restrict x, int h, int w, int c, const float *restrict k,
                             const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                             int ho, int wo, float *restrict y, int act, float lo, float hi) {
    (void)m;
#ifdef MOBILENETS_VECTORS
    int inner_lo, inner_hi;
    inner_columns(w, kw, sw, dw, pl, wo, &inner_lo, &inner_hi);
#endif
    for (int oh = 0; oh < ho; oh++) {
        int ow = 0;
#ifdef MOBILENETS_VECTORS
        if (c % 8 == 0) {
            for (; ow < inner_lo; ow++)
                depthwise_pixel(x, h, w, c, k, b, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * c, act, lo, hi);
            int i_lo, i_hi;
            inner_rows(oh, h, kh, sh, dh, pt, &i_lo, &i_hi);
            for (; ow + 4 <= inner_hi; ow += 4) {
                float *yp = y + ((size_t)oh * wo + ow) * c;
                const float *xr = x + ((size_t)(oh * sh - pt) * w + (ow * sw - pl)) * c;
                /* A constant kernel width lets the compiler unroll the taps and keep the pointers in registers. */
                if (kw == 3 && dw == 1) depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, 3, 1, sw, yp, act, lo, hi);
                else if (kw == 5 && dw == 1) depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, 5, 1, sw, yp, act, lo, hi);
                else depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, kw, dw, sw, yp, act, lo, hi);
            }
        }
#endif
        for (; ow < wo; ow++)
            depthwise_pixel(x, h, w, c, k, b, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * c, act, lo, hi);
    }
}

/* A full convolution (the stem), weights [kh][kw][c][m]. One output pixel, every output channel. */
static inline void conv_pixel(const float *restrict x, int h, int w, int c, const float *restrict k,
                              const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt,
                              int pl, int oh, int ow, float *restrict yp, int act, float lo, float hi) {
    int o0 = 0;
#ifdef MOBILENETS_VECTORS
    for (; o0 + 16 <= m; o0 += 16) { /* 16 outputs in two registers across every tap and channel */
        v8 vlo = LOAD(b + o0), vhi = LOAD(b + o0 + 8);
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                const float *xp = x + ((size_t)ih * w + iw) * c;
                const float *kp = k + ((size_t)i * kw + j) * c * m + o0;
                for (int ci = 0; ci < c; ci++) {
                    vlo += xp[ci] * LOAD(kp + (size_t)ci * m);
                    vhi += xp[ci] * LOAD(kp + (size_t)ci * m + 8);
                }
            }
        }
        ST(yp + o0, vlo);
        ST(yp + o0 + 8, vhi);
    }
#endif
    for (int o = o0; o < m; o++) yp[o] = b[o];
    if (o0 == m) return;
    for (int i = 0; i < kh; i++) {
        const int ih = oh * sh - pt + i * dh;
        if (ih < 0 || ih >= h) continue;
        for (int j = 0; j < kw; j++) {
            const int iw = ow * sw - pl + j * dw;
            if (iw < 0 || iw >= w) continue;
            const float *xp = x + ((size_t)ih * w + iw) * c;
            for (int ci = 0; ci < c; ci++) {
                const float a = xp[ci];
                const float *kp = k + (((size_t)i * kw + j) * c + ci) * m;
                for (int o = o0; o < m; o++) yp[o] += a * kp[o];
            }
        }
    }
    for (int o = o0; o < m; o++) yp[o] = act_s(yp[o], act, lo, hi);
}

/* Inside the image the vector path computes 4 neighbouring output pixels x 16 output channels: each
 * weight vector is loaded once for 4 pixels and 8 accumulators stay in registers across every tap and
 * input channel; the border pixels go through conv_pixel. */
static inline void conv_general(const float *restrict x, int h, int w, int c, const float *restrict k /* [kh][kw][c][m] */,
                                const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                int ho, int wo, float *restrict y, int act, float lo, float hi) {
#ifdef MOBILENETS_VECTORS
    int inner_lo, inner_hi;
    inner_columns(w, kw, sw, dw, pl, wo, &inner_lo, &inner_hi);
#endif
    for (int oh = 0; oh < ho; oh++) {
        int ow = 0;
#ifdef MOBILENETS_VECTORS
        if (m % 16 == 0) {
            for (; ow < inner_lo; ow++)
                conv_pixel(x, h, w, c, k, b, m, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * m, act, lo, hi);
            int i_lo, i_hi;
            inner_rows(oh, h, kh, sh, dh, pt, &i_lo, &i_hi);
            const size_t step = (size_t)sw * c;
            for (; ow + 4 <= inner_hi; ow += 4) {
                float *yp = y + ((size_t)oh * wo + ow) * m;
                for (int o0 = 0; o0 < m; o0 += 16) {
                    v8 a0l = LOAD(b + o0), a0h = LOAD(b + o0 + 8);
                    v8 a1l = a0l, a1h = a0h, a2l = a0l, a2h = a0h, a3l = a0l, a3h = a0h;
                    for (int i = i_lo; i < i_hi; i++) {
                        const float *xi = x + ((size_t)(oh * sh - pt + i * dh) * w + (ow * sw - pl)) * c;
                        for (int j = 0; j < kw; j++) {
                            const float *q = xi + (size_t)j * dw * c;
                            const float *kp = k + ((size_t)i * kw + j) * c * m + o0;
                            for (int ci = 0; ci < c; ci++, kp += m) {
                                const v8 wl = LOAD(kp), wh = LOAD(kp + 8);
                                float s;
                                s = q[ci]; a0l += s * wl; a0h += s * wh;
                                s = q[step + ci]; a1l += s * wl; a1h += s * wh;
                                s = q[2 * step + ci]; a2l += s * wl; a2h += s * wh;
                                s = q[3 * step + ci]; a3l += s * wl; a3h += s * wh;
                            }
                        }
                    }
                    ST(yp + o0, a0l); ST(yp + o0 + 8, a0h);
                    ST(yp + m + o0, a1l); ST(yp + m + o0 + 8, a1h);
                    ST(yp + 2 * m + o0, a2l); ST(yp + 2 * m + o0 + 8, a2h);
                    ST(yp + 3 * m + o0, a3l); ST(yp + 3 * m + o0 + 8, a3h);
                }
            }
        }
#endif
        for (; ow < wo; ow++)
            conv_pixel(x, h, w, c, k, b, m, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * m, act, lo, hi);
    }
}

#ifdef MOBILENETS_VECTORS
#define VECTOR_LOOP(n, body_vector, body_scalar) \
    int i = 0; for (; i + 8 <= (n); i += 8) { body_vector } for (; i < (n); i++) { body_scalar }
#else
#define VECTOR_LOOP(n, body_vector, body_scalar) int i = 0; for (; i < (n); i++) { body_scalar }
#endif
static inline void relu(const float *x, float *y, int n) {
    VECTOR_LOOP(n, STORE(y + i, vmax(LOAD(x + i), splat(0.f)));, y[i] = x[i] > 0.f ? x[i] : 0.f;)
}
static inline void clip(const float *x, float *y, int n, float lo, float hi) {
    VECTOR_LOOP(n, STORE(y + i, vmin(vmax(LOAD(x + i), splat(lo)), splat(hi)));,
                { float v = x[i] < lo ? lo : x[i]; y[i] = v > hi ? hi : v; })
}
static inline void hard_sigmoid(const float *x, float *y, int n, float alpha, float beta) {
    VECTOR_LOOP(n, STORE(y + i, vmin(vmax(LOAD(x + i) * alpha + beta, splat(0.f)), splat(1.f)));,
                { float v = alpha * x[i] + beta; v = v < 0.f ? 0.f : v; y[i] = v > 1.f ? 1.f : v; })
}
static inline void hard_swish(const float *x, float *y, int n) {
    VECTOR_LOOP(n, { const v8 v = LOAD(x + i); STORE(y + i, v * vmin(vmax(v * (1.f / 6.f) + 0.5f, splat(0.f)), splat(1.f))); },
                { float v = x[i] * (1.f / 6.f) + 0.5f; v = v < 0.f ? 0.f : v; v = v > 1.f ? 1.f : v; y[i] = x[i] * v; })
}
static inline void channel_mul(const float *x, const float *s, int pixels, int c, float *y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[p * c + ch] = x[p * c + ch] * s[ch];
}
static inline void channel_add(const float *x, const float *s, int pixels, int c, float *y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[p * c + ch] = x[p * c + ch] + s[ch];
}
/* Flatten of a spatial tensor: ONNX means NCHW order, the arena holds NHWC. */
static inline void to_nchw(const float *restrict x, int pixels, int c, float *restrict y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[(size_t)ch * pixels + p] = x[(size_t)p * c + ch];
}
static inline void spatial_mean(const float *x, int pixels, int c, float *y) {
    float sum[4096];
    for (int ch = 0; ch < c; ch++) sum[ch] = 0.f;
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) sum[ch] += x[p * c + ch];
    for (int ch = 0; ch < c; ch++) y[ch] = sum[ch] / (float)pixels;
}
static inline void gemm(const float *x, int n_in, const float *restrict w /* [in][out] */, const float *b, int n_out,
                        float *restrict y) {
    /* y = b + sum_i x[i] * w[i]: row updates, four weight rows per pass over y (a classifier's weights
     * come from memory, and four streams keep the prefetchers busier than one; measured 1.3x). */
    for (int o = 0; o < n_out; o++) y[o] = b[o];
    int i = 0;
    for (; i + 4 <= n_in; i += 4) {
        const float a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
        const float *w0 = w + (size_t)i * n_out, *w1 = w0 + n_out, *w2 = w1 + n_out, *w3 = w2 + n_out;
        for (int o = 0; o < n_out; o++) y[o] += a0 * w0[o] + a1 * w1[o] + a2 * w2[o] + a3 * w3[o];
    }
    for (; i < n_in; i++) {
        const float a = x[i];
        const float *wi = w + (size_t)i * n_out;
        for (int o = 0; o < n_out; o++) y[o] += a * wi[o];
    }
}
"""


@dataclass
class GeneratedC:
    folder: Path
    arena_bytes: int
    weight_bytes: int
    classes: int


GENERATED_FILES = ("model.c", "model.h", "main.c", "Makefile")
BUILT_FILES = ("model", "model_portable", "libmodel.so")
BANNER = "/* Generated by mobilenets compile-c"


def check_output_folder(out: Path, overwrite: bool = False) -> None:
    """Refuse to write into a folder that holds anything but an earlier compile-c's files (a user's
    Makefile, notes, another project), unless ``overwrite``; even then only our four files are replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CodegenError(f"{out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or overwrite:
        return
    ours = (out / "model.h").is_file() and (out / "model.h").read_text(errors="replace").startswith(BANNER)
    foreign = [name for name in entries if name not in GENERATED_FILES + BUILT_FILES]
    if not ours or foreign:
        shown = ", ".join((foreign or entries)[:5]) + (" ..." if len(foreign or entries) > 5 else "")
        raise CodegenError(
            f"{out} is not empty and was not written by compile-c (it holds {shown}): choose a new "
            "folder, or pass --overwrite to replace model.c, model.h, main.c and Makefile there"
        )


def generate(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int | None = None,
    overwrite: bool = False,
) -> GeneratedC:
    """Write model.c, model.h, main.c and a Makefile into ``out`` (see the module docstring). Everything
    is planned and checked before the first file is written; ``out`` must be new, empty or an earlier
    compile-c output (``overwrite`` lifts that)."""
    out = Path(out)
    check_output_folder(out, overwrite)
    try:
        sources = _sources(Path(onnx_path), resolution)
    except (LiteralError, metadata.MetadataError) as error:
        raise CodegenError(f"{onnx_path}: {error}") from None
    plan = sources.pop("plan")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (out / name).write_text(text)
    weight_bytes = sum(values.size * 4 for _, values in plan.weights)
    return GeneratedC(out, plan.arena_floats * 4, weight_bytes, plan.output_size)


def _sources(onnx_path: Path, resolution: int | None) -> dict:
    """The four files' texts (and the plan under "plan"); nothing from the file reaches them unescaped."""
    plan, meta = _plan(onnx_path, resolution)
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
        KERNELS,
    ]
    body += [_c_array(symbol, values) for symbol, values in plan.weights]
    body.append("void model_run(const float *input, float *logits) {")
    body.append(f"    float *x = A + {plan.input_offset};  /* NCHW in, NHWC inside */")
    body.append(
        f"    for (int ch = 0; ch < {c}; ch++) for (int p = 0; p < {h * w}; p++) x[p * {c} + ch] = input[ch * {h * w} + p];"
    )
    body += [f"    {call}" for call in plan.calls if call]
    body.append(f"    memcpy(logits, A + {plan.output_offset}, sizeof(float) * {classes});")
    body.append("}")
    return {
        "plan": plan,
        "model.h": header,
        "model.c": "\n".join(body) + "\n",
        "main.c": MAIN_C,
        "Makefile": MAKEFILE,
    }


MAIN_C = r"""/* Generated by mobilenets compile-c: classify a binary PPM image. C99, libc and libm only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

static float input[MODEL_INPUT_CHANNELS * MODEL_INPUT_HEIGHT * MODEL_INPUT_WIDTH];
static float logits[MODEL_CLASSES];

/* A header number; -1 for anything else, or for a number over MAX_HEADER_VALUE (no int overflow). */
#define MAX_HEADER_VALUE 1000000
#define MAX_PIXELS 64000000L /* as training's decompression-bomb limit */
static int read_token(FILE *f) {
    int ch, value = 0;
    do { ch = fgetc(f); if (ch == '#') while (ch != '\n' && ch != EOF) ch = fgetc(f); } while (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
    if (ch < '0' || ch > '9') return -1;
    while (ch >= '0' && ch <= '9') {
        value = value * 10 + (ch - '0');
        if (value > MAX_HEADER_VALUE) return -1;
        ch = fgetc(f);
    }
    return value;
}

/* Resize the shorter side to MODEL_RESIZE (area-averaging bilinear), centre-crop, normalise, NCHW. */
static int load_ppm(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); return 1; }
    char magic[3] = {0};
    if (fread(magic, 1, 2, f) != 2 || strcmp(magic, "P6") != 0) { fprintf(stderr, "%s: not a binary PPM (P6)\n", path); fclose(f); return 1; }
    int w = read_token(f), h = read_token(f), maxval = read_token(f);
    if (w <= 0 || h <= 0 || maxval <= 0 || maxval > 255) { fprintf(stderr, "%s: unsupported PPM header (width, height >= 1; maxval 1..255)\n", path); fclose(f); return 1; }
    if ((long)w * h > MAX_PIXELS) { fprintf(stderr, "%s: %dx%d exceeds %ld pixels\n", path, w, h, MAX_PIXELS); fclose(f); return 1; }
    unsigned char *pixels = (unsigned char *)malloc((size_t)w * h * 3);
    if (!pixels || fread(pixels, 3, (size_t)w * h, f) != (size_t)w * h) { fprintf(stderr, "%s: truncated\n", path); free(pixels); fclose(f); return 1; }
    fclose(f);
    const double scale = (double)MODEL_RESIZE / (w < h ? w : h);
    int rw = (int)(w * scale + 0.5), rh = (int)(h * scale + 0.5);
    if (rw < MODEL_INPUT_WIDTH) rw = MODEL_INPUT_WIDTH;
    if (rh < MODEL_INPUT_HEIGHT) rh = MODEL_INPUT_HEIGHT;
    const int left = (rw - MODEL_INPUT_WIDTH) / 2, top = (rh - MODEL_INPUT_HEIGHT) / 2;
    const double sx = (double)w / rw, sy = (double)h / rh;
    const double support_x = sx > 1 ? sx : 1, support_y = sy > 1 ? sy : 1;
    for (int oy = 0; oy < MODEL_INPUT_HEIGHT; oy++)
        for (int ox = 0; ox < MODEL_INPUT_WIDTH; ox++) {
            const double cy = (oy + top + 0.5) * sy - 0.5, cx = (ox + left + 0.5) * sx - 0.5;
            double acc[3] = {0, 0, 0}, total = 0;
            for (int iy = (int)floor(cy - support_y); iy <= (int)ceil(cy + support_y); iy++) {
                const double wy = 1 - fabs(iy - cy) / support_y;
                if (wy <= 0) continue;
                const int y = iy < 0 ? 0 : (iy >= h ? h - 1 : iy);
                for (int ix = (int)floor(cx - support_x); ix <= (int)ceil(cx + support_x); ix++) {
                    const double wx = 1 - fabs(ix - cx) / support_x;
                    if (wx <= 0) continue;
                    const int x = ix < 0 ? 0 : (ix >= w ? w - 1 : ix);
                    const unsigned char *p = pixels + ((size_t)y * w + x) * 3;
                    for (int c = 0; c < 3; c++) acc[c] += wy * wx * p[c] * (255.0 / maxval);
                    total += wy * wx;
                }
            }
            for (int c = 0; c < MODEL_INPUT_CHANNELS; c++)
                input[(c * MODEL_INPUT_HEIGHT + oy) * MODEL_INPUT_WIDTH + ox] =
                    (float)((acc[c % 3] / total / 255.0 - model_mean[c]) / model_std[c]);
        }
    free(pixels);
    return 0;
}

static int load_raw(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); return 1; }
    size_t n = fread(input, sizeof(float), sizeof(input) / sizeof(float), f);
    fclose(f);
    if (n != sizeof(input) / sizeof(float)) { fprintf(stderr, "%s: expected %zu floats, got %zu\n", path, sizeof(input) / sizeof(float), n); return 1; }
    return 0;
}

int main(int argc, char **argv) {
    int top_k = 5, print_logits = 0;
    const char *image = NULL, *raw = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--logits")) print_logits = 1;
        else if (!strcmp(argv[i], "--raw") && i + 1 < argc) raw = argv[++i];
        else if (!strcmp(argv[i], "--top-k") && i + 1 < argc) top_k = atoi(argv[++i]);
        else image = argv[i];
    }
    if (!image && !raw) { fprintf(stderr, "usage: %s IMAGE.ppm [--top-k K] [--logits] | --raw INPUT.f32\n", argv[0]); return 2; }
    if (raw ? load_raw(raw) : load_ppm(image)) return 1;
    model_run(input, logits);
    if (print_logits) { for (int i = 0; i < MODEL_CLASSES; i++) printf("%.9g\n", logits[i]); return 0; }
    float top = -INFINITY;
    for (int i = 0; i < MODEL_CLASSES; i++) if (logits[i] > top) top = logits[i];
    double sum = 0;
    for (int i = 0; i < MODEL_CLASSES; i++) sum += exp(logits[i] - top);
    if (top_k > MODEL_CLASSES) top_k = MODEL_CLASSES;
    static unsigned char taken[MODEL_CLASSES];
    for (int k = 0; k < top_k; k++) { /* NaN logits rank last; every pick is a valid index */
        int best = -1;
        for (int i = 0; i < MODEL_CLASSES; i++)
            if (!taken[i] && (best < 0 || logits[i] > logits[best] || (logits[best] != logits[best] && logits[i] == logits[i]))) best = i;
        taken[best] = 1;
        printf("%6.2f%%  %s\n", 100.0 * exp(logits[best] - top) / sum, model_class_names[best]);
    }
    return 0;
}
"""

MAKEFILE = """# Generated by mobilenets compile-c.
CC ?= cc
CFLAGS ?= -O3 -march=native -std=c99 -ffp-contract=fast -Wall
PORTABLE_CFLAGS ?= -O2 -std=c99 -pedantic -Wall -DMOBILENETS_NO_VECTOR_EXTENSIONS

model: main.c model.c model.h
\t$(CC) $(CFLAGS) -o $@ main.c model.c -lm

portable: main.c model.c model.h
\t$(CC) $(PORTABLE_CFLAGS) -o model_portable main.c model.c -lm

libmodel.so: model.c model.h
\t$(CC) $(CFLAGS) -shared -fPIC -o $@ model.c -lm

clean:
\trm -f model model_portable libmodel.so
"""


def build(folder: Path, target: str = "model", cc: str | None = None) -> Path:
    """Run make in ``folder``; returns the built file."""
    compiler = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise CodegenError("no C compiler found (set CC)")
    result = subprocess.run(
        ["make", "-s", target, f"CC={compiler}"], cwd=folder, capture_output=True, text=True
    )
    if result.returncode:
        raise CodegenError(f"building {target} in {folder} failed:\n{result.stderr[-2000:]}")
    return folder / ("model_portable" if target == "portable" else target)


def build_shared_library(onnx_path: Path, folder: Path):
    """Generate, build libmodel.so and return a callable ``f(x: (1, C, H, W) float32) -> logits``."""
    generated = generate(onnx_path, folder)
    library = ctypes.CDLL(str(build(folder, "libmodel.so")))
    library.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    logits = np.empty(generated.classes, np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        library.model_run(x.ctypes.data, logits.ctypes.data)
        return logits.copy()[None]

    return run
