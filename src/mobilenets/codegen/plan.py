"""The plan: an ONNX graph (read with the NumPy runner's protobuf reader) as a list of C kernel steps.

Every node and attribute is checked (anything unknown is refused by name, since an ignored attribute
would change the answer); 1x1 convolutions' weights are packed in the panels the kernel streams;
activations that follow a convolution are fused into its stores; and every tensor gets an offset in one
static arena from a liveness plan (first fit over lifetimes; unary ops in place). The C text itself is
:mod:`.writer`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.protobuf import parse_model
from .literals import c_float


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
    """What the writer needs: the steps in order (kind, input names, output name, details), every
    tensor's place in the arena, and the weights to emit."""

    steps: list[tuple[str, list[str], str, dict]] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)
    arena_floats: int = 0
    input_shape: tuple[int, ...] = ()
    input_offset: int = 0
    output_offset: int = 0
    output_size: int = 0
    widest_mean: int = 0  # channels of the widest spatial mean (its kernel keeps a 4096-float sum)

    @property
    def weight_bytes(self) -> int:
        """What ``static const`` holds: the flash the weights need (the float C writes every one as 32 bits)."""
        return sum(values.size * 4 for _, values in self.weights)

    @property
    def ram_bytes(self) -> int:
        """The activation arena: the RAM the model needs."""
        return self.arena_floats * 4


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


Step = tuple[str, list[str], str, dict]  # (kernel kind, input names, output name, details)


@dataclass
class NodeView:
    """One node as its planner sees it: operands resolved against what earlier nodes made, constants
    read from the initializers, weights added to the plan, and errors that name the node."""

    node: object
    tensors: dict[str, Tensor]
    initializers: dict[str, np.ndarray]
    plan: Plan

    @property
    def where(self) -> str:
        return f"node {self.node.name or '(unnamed)'!r} ({self.node.op_type})"

    @property
    def attributes(self) -> dict:
        return self.node.attributes

    @property
    def out(self) -> str:
        return self.node.outputs[0]

    def value(self, index: int) -> Tensor:
        name = self.node.inputs[index] if index < len(self.node.inputs) else ""
        if name in self.tensors:
            return self.tensors[name]
        if name in self.initializers:
            raise CodegenError(f"{self.where}: a constant operand ({name!r}) is not supported here")
        raise CodegenError(
            f"{self.where}: input {index} ({name!r}) is not made by an earlier node nor a graph input"
        )

    def constant(self, index: int, what: str) -> np.ndarray | None:
        if index >= len(self.node.inputs) or not self.node.inputs[index]:
            return None
        if self.node.inputs[index] not in self.initializers:
            raise CodegenError(
                f"{self.where}: the {what} ({self.node.inputs[index]!r}) must be an initializer"
            )
        return self.initializers[self.node.inputs[index]]

    def weight(self, array: np.ndarray) -> str:
        """Add a weight array to the plan; returns the C expression that reads it."""
        symbol = f"w{len(self.plan.weights)}"
        self.plan.weights.append((symbol, array))
        return f"{symbol}.f"


def conv_geometry(a: dict, where: str, x_shape, w_shape) -> tuple[str, dict]:
    """Which conv kernel a Conv node needs (conv1x1: 1x1, stride 1, no padding; depthwise; conv: the
    rest, ungrouped) and its geometry; shared by the float and the int8 planners."""
    if len(w_shape) != 4 or 0 in w_shape or len(x_shape) != 4:
        raise CodegenError(f"{where}: needs a 4-D input and 4-D weights (got {x_shape} and {w_shape})")
    _, c, h, wd = x_shape
    m, cg, kh, kw = w_shape
    sh, sw = _ints(a.get("strides", [1, 1]), 2, 1, where, "strides")
    dh, dw = _ints(a.get("dilations", [1, 1]), 2, 1, where, "dilations")
    top, left, bottom, right = _ints(a.get("pads", [0, 0, 0, 0]), 4, 0, where, "pads")
    if "kernel_shape" in a and list(a["kernel_shape"]) != [kh, kw]:
        raise CodegenError(
            f"{where}: kernel_shape {a['kernel_shape']} disagrees with weights {tuple(w_shape)}"
        )
    if a.get("auto_pad", "NOTSET") != "NOTSET":
        raise CodegenError(f"{where}: auto_pad is not supported (export with explicit pads)")
    group = a.get("group", 1)
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise CodegenError(f"{where}: a {kh}x{kw} kernel does not fit the {h}x{wd} input")
    if ho > MAX_SIDE or wo > MAX_SIDE:  # pads from the file: bounded before any plan loops over rows
        raise CodegenError(
            f"{where}: pads {[top, left, bottom, right]} make a {ho}x{wo} output; at most {MAX_SIDE} a side"
        )
    geometry = dict(
        h=h, w=wd, c=c, m=m, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=top, pl=left, ho=ho, wo=wo
    )
    if group == 1 and cg != c:
        raise CodegenError(f"{where}: weights {tuple(w_shape)} expect {cg} input channels, the input has {c}")
    if group == 1 and kh == kw == 1 and sh == sw == 1 and not (top or left or bottom or right):
        return "conv1x1", geometry
    if group == c and cg == 1 and m == c:
        return "depthwise", geometry
    if group == 1:
        return "conv", geometry
    raise CodegenError(
        f"{where}: grouped convolution with group={group} (weights {tuple(w_shape)}, {c} input channels) "
        "is not supported"
    )


def _conv(n: NodeView) -> tuple[Tensor, Step]:
    """Conv as one of three kernels: a 1x1 (stride 1, no padding), a depthwise, or a general conv."""
    x = n.value(0)
    w = n.constant(1, "weights")
    kind, geometry = conv_geometry(n.attributes, n.where, x.shape, () if w is None else w.shape)
    m, c, kh, kw = geometry["m"], geometry["c"], geometry["kh"], geometry["kw"]
    b = n.constant(2, "bias")
    if b is None:
        b = np.zeros(m, np.float32)
    elif b.shape != (m,):
        raise CodegenError(f"{n.where}: bias shape {b.shape} does not match {m} output channels")
    if kind == "conv1x1":
        details = dict(geometry, w=n.weight(_pack_panels(w.reshape(m, c))), b=n.weight(b))
    elif kind == "depthwise":
        details = dict(geometry, wgt=n.weight(w.reshape(c, kh, kw).transpose(1, 2, 0)), b=n.weight(b))
    else:
        details = dict(geometry, wgt=n.weight(w.transpose(2, 3, 1, 0)), b=n.weight(b))
    return Tensor(n.out, (1, m, geometry["ho"], geometry["wo"])), (kind, [x.name], n.out, details)


def _unary(n: NodeView) -> tuple[Tensor, Step]:
    """Relu, HardSwish, HardSigmoid (alpha, beta), Clip (bounds from inputs or, before opset 11,
    attributes) and Identity: elementwise, run in place when the input dies here."""
    a, where, op = n.attributes, n.where, n.node.op_type
    x = n.value(0)
    details: dict = {}
    if op == "HardSigmoid":
        details = dict(
            alpha=c_float(a.get("alpha", 0.2), f"{where}: alpha"),
            beta=c_float(a.get("beta", 0.5), f"{where}: beta"),
        )
    elif op == "Clip":
        bounds = []
        for index, key, default in ((1, "min", -np.inf), (2, "max", np.inf)):
            bound = n.constant(index, key)
            if bound is not None and bound.size != 1:
                raise CodegenError(f"{where}: {key} must be a scalar, got shape {bound.shape}")
            bound = a.get(key, default) if bound is None else bound.item()
            bounds.append(c_float(bound, f"{where}: {key}", allow_infinite=True))
        details = dict(low=bounds[0], high=bounds[1])
    return Tensor(n.out, x.shape), (op, [x.name], n.out, details)


def _binary(n: NodeView) -> tuple[Tensor, Step]:
    """Mul / Add of two equal shapes, or of a map and a per-channel (1, C, 1, 1) vector (SE's gate)."""
    if len(n.node.inputs) != 2:
        raise CodegenError(f"{n.where}: needs two inputs")
    first, second = n.value(0), n.value(1)
    big, small = (first, second) if first.size >= second.size else (second, first)
    op = n.node.op_type
    if small.shape == big.shape:
        kind = op
    elif len(big.shape) == 4 and small.shape == (1, big.shape[1], 1, 1):
        kind = op + "_channel"
    else:
        raise CodegenError(f"{n.where}: broadcast {big.shape} with {small.shape} is not supported")
    return Tensor(n.out, big.shape), (kind, [big.name, small.name], n.out, {})


def _mean(n: NodeView) -> tuple[Tensor, Step]:
    """GlobalAveragePool, or ReduceMean over H and W with keepdims (axes from the input or attribute)."""
    x = n.value(0)
    axes = n.constant(1, "axes")
    default = [2, 3] if n.node.op_type == "GlobalAveragePool" else []
    axes = axes.tolist() if axes is not None else n.attributes.get("axes", default)
    if len(x.shape) != 4 or sorted(int(v) % 4 for v in axes) != [2, 3] or not n.attributes.get("keepdims", 1):
        raise CodegenError(f"{n.where}: only a spatial mean of a 4-D tensor with keepdims is supported")
    details = dict(hw=x.shape[2] * x.shape[3], c=x.shape[1])
    return Tensor(n.out, (1, x.shape[1], 1, 1)), ("mean", [x.name], n.out, details)


def _flatten(n: NodeView) -> tuple[Tensor, Step]:
    x = n.value(0)
    if n.attributes.get("axis", 1) % max(len(x.shape), 1) not in (0, 1):
        raise CodegenError(
            f"{n.where}: only axis 0 or 1 is supported (batch 1), got {n.attributes.get('axis')}"
        )
    # NHWC inside, NCHW meant: a spatial tensor is put back in ONNX's order; (1, C, 1, 1) is the same.
    spatial = len(x.shape) == 4 and x.shape[2] * x.shape[3] > 1
    step = (
        ("to_nchw", [x.name], n.out, dict(hw=x.shape[2] * x.shape[3], c=x.shape[1]))
        if spatial
        else ("Identity", [x.name], n.out, {})
    )
    return Tensor(n.out, (1, x.size)), step


def _gemm(n: NodeView) -> tuple[Tensor, Step]:
    """The classifier: y = x B + C with transA=0 and alpha=beta=1; B is stored [in][out]."""
    a, where = n.attributes, n.where
    x = n.value(0)
    b_matrix = n.constant(1, "B matrix")
    bias = n.constant(2, "C (bias)")
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
    details = dict(n_in=n_in, n_out=n_out, w=n.weight(matrix.T), b=n.weight(bias))
    return Tensor(n.out, (1, n_out)), ("gemm", [x.name], n.out, details)


# One planner per ONNX op; SUPPORTED is their names (the conformance suite runs each).
PLANNERS: dict = {
    "Conv": _conv,
    "Relu": _unary,
    "Clip": _unary,
    "HardSigmoid": _unary,
    "HardSwish": _unary,
    "Mul": _binary,
    "Add": _binary,
    "GlobalAveragePool": _mean,
    "ReduceMean": _mean,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "Identity": _unary,
}
SUPPORTED = tuple(PLANNERS)


def _check_node(node) -> None:
    where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
    if node.op_type not in PLANNERS or node.domain not in ("", "ai.onnx"):
        raise CodegenError(
            f"{where}: op {node.op_type} is not supported by the C generator; supported: {', '.join(SUPPORTED)}"
        )
    unknown = set(node.attributes) - ATTRIBUTES[node.op_type]
    if unknown:
        raise CodegenError(f"{where}: attribute(s) {', '.join(sorted(unknown))} not supported")
    if len(node.outputs) != 1 or not node.outputs[0]:
        raise CodegenError(f"{where}: needs exactly one output, has {len(node.outputs)}")


def plan_model(path: Path, resolution: int | None, proto=None) -> tuple[Plan, dict]:
    """Read the ONNX file (or take its parsed ``proto``), check every node and attribute, and plan steps,
    weights and arena offsets; a CodegenError names the first node the generator cannot take. Nothing is
    written."""
    proto = proto or parse_model(Path(path).read_bytes())
    graph = proto.graph
    init = graph.initializers
    input_name, input_shape = _input_shape(graph, init, resolution)
    tensors: dict[str, Tensor] = {input_name: Tensor(input_name, input_shape)}
    plan = Plan(input_shape=input_shape)
    steps: list[Step] = []
    for node in graph.nodes:
        _check_node(node)
        view = NodeView(node, tensors, init, plan)
        if view.out in tensors:
            raise CodegenError(f"{view.where}: value {view.out!r} is made twice")
        tensor, step = PLANNERS[node.op_type](view)
        tensors[tensor.name] = tensor
        steps.append(step)
    if not graph.outputs or graph.outputs[0].name not in tensors:
        raise CodegenError("the graph's first output is not made by any node")
    output_name = graph.outputs[0].name
    if output_name == input_name:
        raise CodegenError("the graph's output is its input")
    steps = _fuse_activations(steps, output_name)
    assign_arena(tensors, steps, input_name, output_name, plan)
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
    plan.steps, plan.tensors = steps, tensors
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


IN_PLACE_KINDS = ("Relu", "HardSwish", "HardSigmoid", "Clip", "Identity")


def assign_arena(
    tensors, steps, input_name, output_name, plan, in_place=IN_PLACE_KINDS, can_overwrite=None
) -> None:
    """Steps of the kinds in ``in_place`` (unary elementwise ops; and ``can_overwrite(step)`` must agree)
    write over their input when it dies there; every other tensor gets a room of its own. Rooms are
    placed first fit, largest first, over their lifetimes (birth step .. last use); a room shared by
    tensors written over one another is as large at each step as its tensor then (both, at the step that
    overwrites). Sizes and offsets are in elements of the arena's type."""
    last_use = {input_name: 0}
    for index, (_, ins, out, _) in enumerate(steps):
        for name in ins:
            last_use[name] = index
        last_use.setdefault(out, index)
    last_use[output_name] = len(steps)
    birth = {input_name: -1}
    for index, (kind, ins, out, details) in enumerate(steps):
        birth[out] = index
        if (
            kind in in_place
            and last_use[ins[0]] == index
            and (can_overwrite is None or can_overwrite((kind, ins, out, details)))
        ):
            tensors[out].alias = ins[0]

    def root(name):
        while tensors[name].alias:
            name = tensors[name].alias
        return name

    # Each room's size at each step (index + 1: the graph input is born at -1), 64-byte aligned.
    rooms: dict[str, np.ndarray] = {}
    for name in birth:
        profile = rooms.setdefault(root(name), np.zeros(len(steps) + 2, np.int64))
        start, end = birth[name] + 1, last_use.get(name, birth[name]) + 1
        profile[start : end + 1] = np.maximum(profile[start : end + 1], (tensors[name].size + 15) // 16 * 16)
    placed: list[tuple[int, np.ndarray]] = []

    def order(room):
        offset, profile = room
        alive = np.flatnonzero(profile)
        return offset, profile.max(), alive[0], alive[-1]

    for r in sorted(rooms, key=lambda n: -rooms[n].max()):
        profile, offset = rooms[r], 0
        for o, other in sorted(placed, key=order):
            both = (profile > 0) & (other > 0)
            if (both & (offset < o + other) & (o < offset + profile)).any():
                offset = o + int(other[both].max())
        placed.append((offset, profile))
        tensors[r].offset = offset
        plan.arena_floats = max(plan.arena_floats, offset + int(profile.max()))
    for name, tensor in tensors.items():
        if tensor.alias:
            tensor.offset = tensors[root(name)].offset
