"""The integer plan: a QDQ int8 ONNX file (what ``mobilenets quantize`` writes) as integer-only C steps.

A QDQ file keeps float ops between DequantizeLinear and QuantizeLinear nodes; what they compute is what
a TFLite-style integer kernel computes (Jacob et al. 2018, "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", Section 2). So the planner walks the graph once:

- a QuantizeLinear output is an int8 tensor in the arena (uint8 activations are stored as int8 with the
  zero point moved by 128: the same numbers, one type);
- a DequantizeLinear of an initializer is a constant (int8 weights with per-channel scales, int32 biases);
- the float ops after DequantizeLinear wait until the QuantizeLinear that ends them, and then become one
  integer step: a convolution or Gemm (int8 x int8 -> int32, requantized by a fixed-point multiplier and
  shift per output channel, with the ReLU / ReLU6 that the quantizer folded into the output range
  becoming the clamp), an Add or Mul (TFLite's integer formulas), a spatial mean, or, for anything
  elementwise of one int8 tensor (h-sigmoid, h-swish = x * h-sigmoid(x), ReLU, Clip, a requantization),
  a 256-entry table computed here exactly as ONNX Runtime computes those float ops (an int8 input has
  only 256 values, so the table *is* the op).

Anything else (a float op fed by a float value, as ``--keep-float`` leaves, an op the kernels lack, a
per-tensor weight zero point other than 0) is refused with the node and the pattern.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.protobuf import parse_model
from .plan import (
    MAX_ARENA_BYTES,
    CodegenError,
    Plan,
    Tensor,
    _input_shape,
    assign_arena,
    conv_geometry,
)


@dataclass
class QTensor(Tensor):
    """An int8 tensor: real value = scale * (q - zero)."""

    scale: float = 1.0
    zero: int = 0


@dataclass
class Constant:
    """A DequantizeLinear of an initializer: the stored integers and their scales (per channel or one)."""

    values: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    axis: int


@dataclass
class Pending:
    """Float ops on int8 inputs that wait for the QuantizeLinear that ends them."""

    kind: str  # conv, gemm, add, mul, mean, table
    node: object
    inputs: list  # QTensor or Constant, per kind
    shape: tuple[int, ...]
    activations: list = field(default_factory=list)  # (low, high) bounds folded into the clamp
    function: object = None  # table: real -> real (NumPy float32 in, out)
    conv: tuple | None = None  # conv: (kernel kind, geometry) from conv_geometry
    transposed_b: bool = False  # gemm: B is stored (out, in)


@dataclass
class Int8Plan(Plan):
    """The float Plan's fields, in bytes, plus what the integer kernels need."""

    input_scale: float = 1.0
    input_zero: int = 0
    output_scale: float = 1.0
    output_zero: int = 0
    scratch_ints: int = 0  # the widest per-channel int32 accumulator row (depthwise, mean)
    rows_bytes: int = 0  # the general convolution's im2col rows (one output row's patches)
    tables: int = 0

    @property
    def weight_bytes(self) -> int:
        return sum(values.nbytes for _, values in self.weights)  # int8, int32 arrays as they are

    @property
    def ram_bytes(self) -> int:
        return self.arena_floats + ARENA_SLACK + 4 * self.scratch_ints + self.rows_bytes


def quantize_multiplier(real: float, where: str) -> tuple[int, int]:
    """``real`` as a Q31 multiplier and a power-of-two shift (left when positive), as TFLite's
    QuantizeMultiplier: real = multiplier / 2**31 * 2**shift."""
    if not math.isfinite(real) or real < 0:
        raise CodegenError(f"{where}: requantization scale {real!r} is not a finite non-negative number")
    if real == 0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise CodegenError(f"{where}: requantization scale {real:g} is too large for int32 arithmetic")
    return multiplier, shift


def add_multipliers(ratio_a: float, ratio_b: float, where: str) -> tuple[int, int, int]:
    """Two int32 multipliers over one power of two for ``ratio_a * a + ratio_b * b``: the largest
    ``total`` (at most 62) that keeps both below 2**31, so the sum is rounded once."""
    largest = max(ratio_a, ratio_b)
    if not (math.isfinite(largest) and largest > 0):
        raise CodegenError(f"{where}: input over output scale {largest!r} is not a finite positive number")
    total = min(62, math.floor(math.log2((2**31 - 1) / largest)))
    if total < 1:
        raise CodegenError(f"{where}: input over output scale {largest:g} is too large for int32 arithmetic")
    return round(ratio_a * 2**total), round(ratio_b * 2**total), total


def _quantize_float32(values: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """ONNX QuantizeLinear into the int8 domain: x / scale rounded half to even, plus zero, saturated."""
    q = np.rint(values.astype(np.float32) / np.float32(scale)) + zero
    return np.clip(q, -128, 127).astype(np.int8)


def _dequantize_float32(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero)) * np.float32(scale)


ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def _scalar(array: np.ndarray | None, where: str, what: str) -> float | int:
    if array is None or array.size != 1:
        raise CodegenError(
            f"{where}: the {what} must be one value (per-tensor), got shape "
            f"{None if array is None else array.shape}"
        )
    return array.reshape(()).item()


class Walk:
    """One pass over the QDQ graph; see the module docstring."""

    def __init__(self, graph, input_name: str, input_shape):
        self.init = graph.initializers
        self.input_name = input_name
        self.input_shape = input_shape
        self.q: dict[str, QTensor] = {}  # int8 tensors (QuantizeLinear outputs)
        self.dq: dict[str, str] = {}  # float name -> int8 tensor it dequantizes
        self.constants: dict[str, Constant] = {}
        self.pending: dict[str, Pending] = {}
        self.tables_of: dict[str, tuple[str, np.ndarray]] = {}  # int8 tensor -> (source, table)
        self.steps: list = []
        self.weights: list[tuple[str, np.ndarray]] = []
        self.input_q: QTensor | None = None

    def weight(self, array: np.ndarray) -> str:
        symbol = f"w{len(self.weights)}"
        self.weights.append((symbol, np.ascontiguousarray(array)))
        return symbol

    # ---- operands ------------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"node {node.name or '(unnamed)'!r} ({node.op_type})"

    def initializer(self, node, index: int, what: str) -> np.ndarray | None:
        if index >= len(node.inputs) or not node.inputs[index]:
            return None
        name = node.inputs[index]
        if name not in self.init:
            raise CodegenError(f"{self.where(node)}: the {what} ({name!r}) must be an initializer")
        return self.init[name]

    def activation(self, node, index: int) -> QTensor:
        name = node.inputs[index] if index < len(node.inputs) else ""
        if name in self.dq:
            return self.q[self.dq[name]]
        if name in self.pending:
            raise CodegenError(
                f"{self.where(node)}: input {name!r} is a float result that was never quantized "
                f"({self.pending[name].node.op_type} -> {node.op_type} with no QuantizeLinear between); "
                "the int8 generator needs QuantizeLinear after every op (quantize without --keep-float)"
            )
        raise CodegenError(
            f"{self.where(node)}: input {index} ({name!r}) is not dequantized from int8: the int8 "
            "generator takes QDQ files from `mobilenets quantize` (without --keep-float)"
        )

    def constant(self, node, index: int, what: str, required: bool = False) -> Constant | None:
        name = node.inputs[index] if index < len(node.inputs) else ""
        if not name:
            if required:
                raise CodegenError(f"{self.where(node)}: needs the {what} (input {index})")
            return None
        if name in self.constants:
            return self.constants[name]
        if name in self.init:  # a float constant (a bias the quantizer left alone): scale 1, zero 0
            value = self.init[name]
            return Constant(value, np.ones(1, np.float64), np.zeros(1, np.int64), 0)
        raise CodegenError(f"{self.where(node)}: the {what} ({name!r}) must be a constant")

    # ---- nodes ---------------------------------------------------------------------------------
    def visit(self, node) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise CodegenError(
                f"{self.where(node)}: op {node.domain}.{op} is not supported by the C generator"
            )
        if len(node.outputs) != 1 or not node.outputs[0]:
            raise CodegenError(f"{self.where(node)}: needs exactly one output")
        out = node.outputs[0]
        if out in self.q or out in self.dq or out in self.pending or out in self.constants:
            raise CodegenError(f"{self.where(node)}: value {out!r} is made twice")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise CodegenError(
                f"{self.where(node)}: op {op} is not supported by the int8 C generator; supported: "
                + ", ".join(sorted(name[3:] for name in dir(self) if name.startswith("op_")))
            )
        allowed = ATTRIBUTES.get(op, set())
        unknown = set(node.attributes) - allowed
        if unknown:
            raise CodegenError(f"{self.where(node)}: attribute(s) {', '.join(sorted(unknown))} not supported")
        handler(node, out)

    def op_QuantizeLinear(self, node, out) -> None:
        where = self.where(node)
        scale = float(_scalar(self.initializer(node, 1, "scale"), where, "scale"))
        zero_array = self.initializer(node, 2, "zero point")
        if zero_array is None or zero_array.dtype not in (np.uint8, np.int8):
            raise CodegenError(f"{where}: the int8 generator needs a uint8 or int8 zero point")
        zero = int(_scalar(zero_array, where, "zero point")) - (128 if zero_array.dtype == np.uint8 else 0)
        if not (math.isfinite(scale) and scale > 0):
            raise CodegenError(f"{where}: scale must be finite and positive, got {scale}")
        source = node.inputs[0]
        if source == self.input_name:
            tensor = QTensor(out, self.input_shape, scale=scale, zero=zero)
            self.input_q = tensor
            self.q[out] = tensor
            return
        if source in self.dq:  # DequantizeLinear -> QuantizeLinear: a requantization
            x = self.q[self.dq[source]]
            pending = Pending("table", node, [x], x.shape, function=lambda v: v)
        elif source in self.pending:
            pending = self.pending.pop(source)
        else:
            raise CodegenError(
                f"{where}: quantizes {source!r}, which is neither the graph input nor made from int8 values"
            )
        self.q[out] = self.emit(pending, QTensor(out, pending.shape, scale=scale, zero=zero))

    def op_DequantizeLinear(self, node, out) -> None:
        where = self.where(node)
        source = node.inputs[0]
        scale = self.initializer(node, 1, "scale")
        zero = self.initializer(node, 2, "zero point")
        if source in self.q:
            tensor = self.q[source]
            s = float(_scalar(scale, where, "scale"))
            z = 0 if zero is None else int(_scalar(zero, where, "zero point"))
            z -= 128 if zero is not None and zero.dtype == np.uint8 else 0
            if s != np.float32(tensor.scale) or z != tensor.zero:
                raise CodegenError(
                    f"{where}: dequantizes {source!r} with a scale or zero point other than the one it was "
                    "quantized with"
                )
            self.dq[out] = source
            return
        values = self.initializer(node, 0, "quantized constant")
        if scale is None:
            raise CodegenError(f"{where}: needs a scale")
        if values.dtype not in (np.int8, np.uint8, np.int32):
            raise CodegenError(
                f"{where}: constant {source!r} has type {values.dtype}; int8 or int32 expected"
            )
        axis = node.attributes.get("axis", 1)
        if not isinstance(axis, int) or not -max(values.ndim, 1) <= axis < max(values.ndim, 1):
            raise CodegenError(f"{where}: axis {axis!r} is outside the {values.ndim}-D constant {source!r}")
        if scale.size > 1 and (scale.ndim != 1 or values.ndim == 0 or scale.size != values.shape[axis]):
            raise CodegenError(f"{where}: {scale.size} scales do not match axis {axis} of {values.shape}")
        zero = np.zeros(1, np.int64) if zero is None else zero.astype(np.int64).ravel()
        if values.dtype == np.uint8:
            values, zero = (values.astype(np.int16) - 128).astype(np.int8), zero - 128
        if not np.all(np.isfinite(scale)) or np.any(scale.astype(np.float64) <= 0):
            raise CodegenError(f"{where}: scales of {source!r} must be finite and positive")
        self.constants[out] = Constant(
            values, scale.astype(np.float64).ravel(), zero, axis % max(values.ndim, 1)
        )

    def op_Conv(self, node, out) -> None:
        x = self.activation(node, 0)
        weights = self.constant(node, 1, "weights", required=True)
        kind, geometry = conv_geometry(node.attributes, self.where(node), x.shape, weights.values.shape)
        bias = self.constant(node, 2, "bias")
        shape = (1, geometry["m"], geometry["ho"], geometry["wo"])
        self.pending[out] = Pending("conv", node, [x, weights, bias], shape, conv=(kind, geometry))

    def op_Gemm(self, node, out) -> None:
        a, where = node.attributes, self.where(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise CodegenError(f"{where}: only Gemm with transA=0, alpha=beta=1 is supported")
        x = self.activation(node, 0)
        weights = self.constant(node, 1, "B matrix", required=True)
        if weights.values.ndim != 2:
            raise CodegenError(f"{where}: B must be 2-D")
        n_in = weights.values.shape[1] if a.get("transB", 0) else weights.values.shape[0]
        if x.shape != (1, n_in):
            raise CodegenError(f"{where}: input shape {x.shape} does not match B {weights.values.shape}")
        transposed = bool(a.get("transB", 0))
        n_out = weights.values.shape[0] if transposed else weights.values.shape[1]
        inputs = [x, weights, self.constant(node, 2, "C (bias)")]
        self.pending[out] = Pending("gemm", node, inputs, (1, n_out), transposed_b=transposed)

    def _binary(self, node, out, kind: str) -> None:
        if len(node.inputs) != 2:
            raise CodegenError(f"{self.where(node)}: needs two inputs")
        first, second = self.activation(node, 0), self.activation(node, 1)
        big, small = (first, second) if first.size >= second.size else (second, first)
        if small.shape != big.shape and not (
            kind == "mul" and len(big.shape) == 4 and small.shape == (1, big.shape[1], 1, 1)
        ):
            raise CodegenError(
                f"{self.where(node)}: broadcast {big.shape} with {small.shape} is not supported"
            )
        # x * table(x) (h-swish as exported: x * h-sigmoid(x)) is a function of x alone: one table.
        for a, b in ((first, second), (second, first)):
            if self.tables_of.get(b.name, (None,))[0] == a.name and kind == "mul":
                function = _times_table(a, self.tables_of[b.name][1], b.scale, b.zero)
                self.pending[out] = Pending("table", node, [a], a.shape, function=function)
                return
        self.pending[out] = Pending(kind, node, [big, small], big.shape)

    def op_Add(self, node, out) -> None:
        self._binary(node, out, "add")

    def op_Mul(self, node, out) -> None:
        self._binary(node, out, "mul")

    def _mean(self, node, out, axes) -> None:
        x = self.activation(node, 0)
        if (
            len(x.shape) != 4
            or sorted(int(v) % 4 for v in axes) != [2, 3]
            or not node.attributes.get("keepdims", 1)
        ):
            raise CodegenError(
                f"{self.where(node)}: only a spatial mean of a 4-D tensor with keepdims is supported"
            )
        self.pending[out] = Pending("mean", node, [x], (1, x.shape[1], 1, 1))

    def op_GlobalAveragePool(self, node, out) -> None:
        self._mean(node, out, [2, 3])

    def op_ReduceMean(self, node, out) -> None:
        axes = self.initializer(node, 1, "axes")
        self._mean(node, out, axes.tolist() if axes is not None else node.attributes.get("axes", []))

    def _elementwise(self, node, out, function, clamp=None) -> None:
        """A unary float op: folded into the clamp of a pending conv / gemm (ReLU, Clip), otherwise a
        table over the 256 values of its int8 input."""
        source = node.inputs[0]
        if clamp is not None and source in self.pending and self.pending[source].kind in ("conv", "gemm"):
            pending = self.pending.pop(source)
            pending.activations.append(clamp)
            self.pending[out] = pending
            return
        x = self.activation(node, 0)
        self.pending[out] = Pending("table", node, [x], x.shape, function=function)

    def op_Relu(self, node, out) -> None:
        self._elementwise(node, out, lambda x: np.maximum(x, np.float32(0)), (0.0, math.inf))

    def op_Clip(self, node, out) -> None:
        where = self.where(node)
        low = self.initializer(node, 1, "min")
        high = self.initializer(node, 2, "max")
        low = -math.inf if low is None else float(_scalar(low, where, "min"))
        high = math.inf if high is None else float(_scalar(high, where, "max"))
        low, high = node.attributes.get("min", low), node.attributes.get("max", high)
        self._elementwise(
            node, out, lambda x: np.minimum(np.maximum(x, np.float32(low)), np.float32(high)), (low, high)
        )

    def op_HardSigmoid(self, node, out) -> None:
        alpha = np.float32(node.attributes.get("alpha", 0.2))
        beta = np.float32(node.attributes.get("beta", 0.5))
        self._elementwise(node, out, lambda x: np.clip(alpha * x + beta, np.float32(0), np.float32(1)))

    def op_HardSwish(self, node, out) -> None:
        sixth = np.float32(1 / 6)
        self._elementwise(
            node, out, lambda x: x * np.clip(sixth * x + np.float32(0.5), np.float32(0), np.float32(1))
        )

    def op_Sigmoid(self, node, out) -> None:
        self._elementwise(node, out, lambda x: (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32))

    def op_Flatten(self, node, out) -> None:
        source = node.inputs[0]
        shape = self.pending[source].shape if source in self.pending else self.activation(node, 0).shape
        if len(shape) == 4 and shape[2] * shape[3] != 1:
            raise CodegenError(f"{self.where(node)}: only a flatten of (1, C, 1, 1) is supported in int8")
        if source in self.pending:
            pending = self.pending.pop(source)
            pending.shape = (1, int(np.prod(shape)))
        else:
            x = self.activation(node, 0)
            pending = Pending("table", node, [x], (1, x.size), function=lambda v: v)
        self.pending[out] = pending

    # ---- integer steps ---------------------------------------------------------------------------
    def emit(self, pending: Pending, y: QTensor) -> QTensor:
        where = self.where(pending.node)
        if pending.kind == "table":
            (x,) = pending.inputs
            real = pending.function(_dequantize_float32(ALL_INT8, x.scale, x.zero))
            table = _quantize_float32(np.asarray(real, np.float32), y.scale, y.zero)
            self.tables_of[y.name] = (x.name, table)
            self.steps.append(("table", [x.name], y.name, dict(table=self.weight(table), n=x.size)))
            return QTensor(y.name, pending.shape, scale=y.scale, zero=y.zero)
        if pending.kind in ("conv", "gemm"):
            return self._emit_conv(pending, y, where)
        low, high = -128, 127
        if pending.kind == "add":
            a, b = pending.inputs
            ma, mb, total = add_multipliers(a.scale / y.scale, b.scale / y.scale, where)
            details = dict(
                za=a.zero, zb=b.zero, zy=y.zero, low=low, high=high, n=a.size, ma=ma, mb=mb, total=total
            )
            self.steps.append(("add", [a.name, b.name], y.name, details))
        elif pending.kind == "mul":
            a, b = pending.inputs
            details = dict(
                za=a.zero,
                zb=b.zero,
                zy=y.zero,
                low=low,
                high=high,
                m=quantize_multiplier(a.scale * b.scale / y.scale, where),
                n=a.size,
                channels=a.shape[1] if b.size != a.size else 0,
            )
            self.steps.append(("mul", [a.name, b.name], y.name, details))
        elif pending.kind == "mean":
            (x,) = pending.inputs
            hw = x.shape[2] * x.shape[3]
            details = dict(
                hw=hw,
                c=x.shape[1],
                zx=x.zero,
                zy=y.zero,
                m=quantize_multiplier(x.scale / (hw * y.scale), where),
            )
            self.steps.append(("mean", [x.name], y.name, details))
        else:
            raise AssertionError(pending.kind)
        return QTensor(y.name, pending.shape, scale=y.scale, zero=y.zero)

    def _emit_conv(self, pending: Pending, y: QTensor, where: str) -> QTensor:
        x, weights, bias = pending.inputs
        if weights.values.dtype != np.int8 or np.any(weights.zero != 0):
            raise CodegenError(
                f"{where}: weights must be int8 with zero point 0 (symmetric), as quantize writes"
            )
        if pending.kind == "gemm":
            matrix = weights.values if pending.transposed_b else weights.values.T  # (out, in)
            out_axis = 0 if pending.transposed_b else 1
            m = matrix.shape[0]
            kind, geometry = "conv1x1", dict(h=1, w=1, c=matrix.shape[1], m=m, ho=1, wo=1)
            if weights.scale.size > 1 and weights.axis != out_axis:
                raise CodegenError(f"{where}: per-channel weight scales must run along the output axis")
            w4 = matrix.reshape(m, -1, 1, 1)
        else:
            kind, geometry = pending.conv
            m = geometry["m"]
            w4 = weights.values
            if weights.scale.size > 1 and weights.axis != 0:
                raise CodegenError(f"{where}: per-channel weight scales must run along the output axis")
        w_scale = np.broadcast_to(weights.scale, (m,)).astype(np.float64)
        accumulator_scale = np.float64(x.scale) * w_scale
        if bias is None:
            bias_q = np.zeros(m, np.int64)
        else:
            real = (bias.values.astype(np.float64).reshape(-1) - bias.zero) * bias.scale
            if real.size == 1:
                real = np.broadcast_to(real, (m,))
            if real.shape != (m,):
                raise CodegenError(f"{where}: bias shape {bias.values.shape} does not match {m} outputs")
            bias_q = np.rint(real / accumulator_scale).astype(np.int64)
        low, high = -128, 127
        for activation_low, activation_high in pending.activations:
            if activation_low > -math.inf:
                low = max(low, min(127, y.zero + round(activation_low / y.scale)))
            if activation_high < math.inf:
                high = min(high, max(-128, y.zero + round(activation_high / y.scale)))
        multipliers = [quantize_multiplier(s / y.scale, where) for s in accumulator_scale]
        mult = np.array([mm for mm, _ in multipliers], np.int32)
        shift = np.array([sh for _, sh in multipliers], np.int8)
        c = geometry["c"]
        extra = {}
        if kind in ("conv1x1", "conv"):
            # A general convolution (the stem) runs as a 1x1 over its patches, [ky][kx][c] per pixel,
            # with the padding filled with the input zero point (so it adds nothing).
            matrix = w4.transpose(0, 2, 3, 1).reshape(m, -1).astype(np.int8)
            sums = matrix.astype(np.int64).sum(axis=1)
            # Padding-free: the input zero point folds into the bias, and the kernel multiplies raw int8.
            bias_q = bias_q - x.zero * sums
            w = pack_panels_int8(matrix)
            padded = -m % PANEL
            # x86's dot-product instruction (vpdpbusd) multiplies unsigned by signed bytes: the vector path
            # reads x + 128 and takes 128 * sum(w) back off; the arrays run to a whole panel.
            extra = dict(wsum=self.weight(np.pad(128 * sums, (0, padded)).astype(np.int32)))
            bias_q, mult, shift = (np.pad(a, (0, padded)) for a in (bias_q, mult, shift))
        elif kind == "depthwise":
            w = w4.reshape(c, geometry["kh"], geometry["kw"]).transpose(1, 2, 0)  # [kh][kw][c]
        if np.any(np.abs(bias_q) >= 2**31):
            raise CodegenError(f"{where}: a bias does not fit int32 at this scale")
        details = dict(
            geometry,
            wgt=self.weight(np.ascontiguousarray(w, np.int8)),
            b=self.weight(bias_q.astype(np.int32)),
            mult=self.weight(mult),
            shift=self.weight(shift),
            zx=x.zero,
            zy=y.zero,
            low=low,
            high=high,
            **extra,
        )
        shape = pending.shape
        self.steps.append((kind, [x.name], y.name, details))
        return QTensor(y.name, shape, scale=y.scale, zero=y.zero)


ARENA_SLACK = 64  # the 1x1 kernel reads its input rows four bytes at a time, past a row's end
PANEL = 16  # output channels per panel of packed 1x1 weights (one AVX-512 register of int32 sums)


def pack_panels_int8(matrix: np.ndarray) -> np.ndarray:
    """(m, c) int8 weights as the int8 1x1 kernel streams them: panels of 16 output channels, each
    [c/4][16][4] (four consecutive input channels of one output channel side by side, which is what one
    lane of x86's vpdpbusd or Arm's sdot multiplies); zeros pad m to 16 and c to 4."""
    m, c = matrix.shape
    padded = np.zeros((-(-m // PANEL) * PANEL, -(-c // 4) * 4), np.int8)
    padded[:m, :c] = matrix
    panels = padded.reshape(-1, PANEL, padded.shape[1] // 4, 4)  # [panel][16][c/4][4]
    return np.ascontiguousarray(panels.transpose(0, 2, 1, 3)).ravel()


def _times_table(a: QTensor, table: np.ndarray, scale_b: float, zero_b: int):
    """x -> x * table(x) as real numbers: the h-swish that export writes as x * h-sigmoid(x)."""

    def function(real_a: np.ndarray) -> np.ndarray:
        q_a = _quantize_float32(real_a, a.scale, a.zero)  # recovers ALL_INT8 exactly
        return real_a * _dequantize_float32(table[q_a.astype(np.int16) + 128], scale_b, zero_b)

    return function


ATTRIBUTES = {
    "QuantizeLinear": {"axis"},
    "DequantizeLinear": {"axis"},
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "Clip": {"min", "max"},
    "HardSigmoid": {"alpha", "beta"},
    "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "Flatten": {"axis"},
}


def is_quantized(proto) -> bool:
    """Whether a parsed ONNX model holds QuantizeLinear nodes (a QDQ file)."""
    return any(node.op_type == "QuantizeLinear" for node in proto.graph.nodes)


def _live_steps(steps: list, output: str) -> list:
    """Drop steps whose results nothing reads: h-sigmoid's table once x * h-sigmoid(x) became one."""
    needed, kept = {output}, []
    for step in reversed(steps):
        if step[2] in needed:
            kept.append(step)
            needed.update(step[1])
    return kept[::-1]


def ring_rows(d: dict) -> int | None:
    """Rows of the ring an in-place depthwise step needs (q_depthwise's schedule, run here): output row oy
    waits in the ring until no later output row reads the input bytes it will cover. None where the
    schedule cannot finish (an output larger than its input)."""
    row, done, most = d["wo"] * d["c"], 0, 0
    for oy in range(d["ho"]):
        most = max(most, oy + 1 - done)
        first_read = (oy + 1) * d["sh"] - d["pt"] if oy + 1 < d["ho"] else d["h"]
        while done <= oy and (done + 1) * row <= first_read * d["w"] * d["c"]:
            done += 1
    return most if done == d["ho"] else None


def pixel_block(d: dict) -> int:
    """Pixels per block of an in-place 1x1 step (q_conv1x1): a scratch of about 1/32 of the output or 1 KB,
    whichever is larger (each block costs the kernel a restart), at least 8 pixels (the AVX-512
    kernel's block), never more than the step has."""
    pixels = d["ho"] * d["wo"]
    return min(pixels, max(8, max(1024, pixels * d["m"] // 32) // d["m"] // 8 * 8))


def _arena(walk: Walk, output: str, input_shape, overwrite: set[str]) -> tuple[Int8Plan, dict[str, Tensor]]:
    """The arena where the depthwise and 1x1 steps making the tensors named in ``overwrite`` write over
    their input (where it dies there), and the scratch rows (the stem's im2col rows, the in-place
    rings and blocks) that go with it."""
    tensors: dict[str, Tensor] = copy.deepcopy(dict(walk.q))
    plan = Int8Plan(input_shape=input_shape)
    assign_arena(
        tensors,
        walk.steps,
        walk.input_q.name,
        output,
        plan,
        in_place=("table", "depthwise", "conv1x1"),
        can_overwrite=lambda step: (
            step[0] == "table"
            or (step[2] in overwrite and (step[0] != "depthwise" or ring_rows(step[3]) is not None))
        ),
    )
    plan.rows_bytes = max(_scratch_bytes(step, tensors) for step in walk.steps)
    return plan, tensors


def _scratch_bytes(step: tuple, tensors: dict[str, Tensor]) -> int:
    """The scratch rows a step needs: the stem's im2col rows, an in-place step's ring or block, or none."""
    kind, ins, out, d = step
    if kind == "conv":
        return d["wo"] * d["kh"] * d["kw"] * d["c"] + ARENA_SLACK
    if tensors[out].alias != ins[0]:
        return 0
    if kind == "depthwise":
        return ring_rows(d) * d["wo"] * d["c"] + ARENA_SLACK
    if kind == "conv1x1":
        return pixel_block(d) * d["m"] + ARENA_SLACK
    return 0


def plan_int8(
    path: Path, resolution: int | None = None, proto=None, in_place: bool = True
) -> tuple[Int8Plan, dict]:
    """Plan a QDQ file's (or its parsed ``proto``'s) integer steps, weights and arena (in bytes); refuses
    what it cannot run. ``in_place=False`` gives every tensor a room of its own (for comparison)."""
    proto = proto or parse_model(Path(path).read_bytes())
    graph = proto.graph
    input_name, input_shape = _input_shape(graph, graph.initializers, resolution)
    walk = Walk(graph, input_name, input_shape)
    for node in graph.nodes:
        walk.visit(node)
    if walk.input_q is None:
        raise CodegenError("the graph input is never quantized: this is not an int8 QDQ model")
    if not graph.outputs or graph.outputs[0].name not in walk.dq:
        raise CodegenError(
            "the graph's first output must be a DequantizeLinear of an int8 tensor (an int8 QDQ model's "
            "logits)"
        )
    output = walk.q[walk.dq[graph.outputs[0].name]]
    walk.steps = _live_steps(walk.steps, output.name)
    # Depthwise and 1x1 steps overwrite their input where that lowers the RAM (arena + scratch rows):
    # TinyEngine's in-place depthwise (Lin et al. 2020, "MCUNet", Section 3.2), and the same for 1x1.
    # All of them first; then, while the largest scratch belongs to an in-place step, that step goes
    # back to a room of its own if that lowers the total (the 1x1 head of a small network at 1280
    # channels needs a scratch block larger than the room it saves).
    plan, tensors = _arena(walk, output.name, input_shape, set())
    if in_place:
        candidates = {step[2]: step for step in walk.steps if step[0] in ("depthwise", "conv1x1")}
        overwrite = set(candidates)
        trial = _arena(walk, output.name, input_shape, overwrite)
        while trial[0].ram_bytes < plan.ram_bytes:
            plan, tensors = trial
            largest = max(overwrite, key=lambda name: _scratch_bytes(candidates[name], tensors), default=None)
            if largest is None or _scratch_bytes(candidates[largest], tensors) < plan.rows_bytes:
                break
            overwrite = overwrite - {largest}
            trial = _arena(walk, output.name, input_shape, overwrite)
    if plan.arena_floats > MAX_ARENA_BYTES:
        raise CodegenError(f"the model needs an activation arena of {plan.arena_floats >> 20} MiB")
    used = {v for _, _, _, d in walk.steps for v in d.values() if isinstance(v, str)}
    plan.steps, plan.tensors = walk.steps, tensors
    plan.weights = [(symbol, values) for symbol, values in walk.weights if symbol in used]
    plan.input_offset, plan.output_offset = tensors[walk.input_q.name].offset, tensors[output.name].offset
    plan.output_size = output.size
    plan.input_scale, plan.input_zero = walk.input_q.scale, walk.input_q.zero
    plan.output_scale, plan.output_zero = output.scale, output.zero
    plan.scratch_ints = max(
        (d["c"] for kind, _, _, d in walk.steps if kind in ("depthwise", "mean")), default=0
    )
    plan.tables = sum(kind == "table" for kind, _, _, _ in walk.steps)
    return plan, proto.metadata
