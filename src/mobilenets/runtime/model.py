"""Run an ONNX model with NumPy alone: parse, check every op is supported, execute in graph order.

Values are freed after their last use (a liveness plan over the node list), so peak memory is the largest
set of live activations, not their sum. Two more decisions are made once, from the graph, before the
first run:

- an elementwise op whose input dies at that node, and shares memory with nothing still live, writes its
  result over that input (``out=``) instead of into a new array;
- a convolution whose output (through such in-place ops) feeds a depthwise convolution lays it out
  between zero rows (``margin_rows=``), so the depthwise reads it where it lies, padding included;
- when that depthwise convolution has a horizontal stride and is the only reader (through activations
  that only it reads), the producer stores each row's columns grouped by phase (``column_phases=``), so
  the depthwise reads exactly the columns it needs as contiguous runs.

Convolutions are prepared on the first run with a given input shape (geometry and weight layouts, see
:func:`.conv.prepare_conv`) and kept for later runs with that shape.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np

from . import metadata
from .conv import DIRECT_COLUMNS_FROM
from .ops import NEWEST_OPSET, OPS, PREPARED, RUNNER_KEYWORDS, for_opset
from .protobuf import DTYPES, OnnxFormatError, dtype_name, parse_model


class UnsupportedOnnx(NotImplementedError):
    """An op, attribute or attribute value this runner does not implement; the message names the node."""


# Ops that can write their result over an input (how many leading inputs may be overwritten), and ops
# whose output may be a view of their first input.
IN_PLACE_OPS = {"Relu": 1, "Clip": 1, "HardSigmoid": 1, "HardSwish": 1, "Add": 2, "Mul": 2}
VIEW_OPS = {"Reshape", "Flatten", "Identity"}
# Elementwise ops of one tensor (Clip's bounds are scalars): blind to the order columns are stored in.
UNARY_OPS = {"Relu", "Clip", "HardSigmoid", "HardSwish"}
PREPARED_SHAPES = 8  # input shapes whose prepared ops a model keeps


def _kwargs(node) -> dict:
    return {key: value for key, value in node.attributes.items()}


def _contiguous(value) -> np.ndarray:
    """C-contiguous, keeping 0-d results 0-d (np.ascontiguousarray makes them shape (1,))."""
    value = np.asarray(value)
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


class OnnxModel:
    """An ONNX model ready to run: ``OnnxModel(path)(x)`` returns the first output."""

    def __init__(self, source: str | os.PathLike | bytes):
        if isinstance(source, (bytes, bytearray)):
            data, self.path = bytes(source), None
        else:
            self.path = Path(source)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path} does not exist")
            data = self.path.read_bytes()
        try:
            proto = parse_model(data)
        except OnnxFormatError as error:
            raise OnnxFormatError(f"{self.path or 'the bytes'}: {error}") from None
        self.graph, self.metadata, self.opsets = proto.graph, proto.metadata, proto.opsets
        self.initializers = self.graph.initializers
        self.inputs = [i for i in self.graph.inputs if i.name not in self.initializers]
        self.outputs = [o.name for o in self.graph.outputs]
        self._check_supported()
        self._steps = self._schedule()
        self._prepared: dict[tuple, list] = {}  # input shapes -> per step, the prepared op or None

    def _check_supported(self) -> None:
        """Every node's op, attributes and inputs, checked against the opset the model declares: the
        resolved function per node, or an error naming the node."""
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx"))
        if self.opset is None:
            raise OnnxFormatError(
                f"{self.path or 'the model'}: declares no opset for the default ONNX domain"
            )
        if not 1 <= self.opset <= NEWEST_OPSET:
            raise UnsupportedOnnx(
                f"{self.path or 'the model'}: declares opset {self.opset}; this runner knows opsets 1 to "
                f"{NEWEST_OPSET}"
            )
        known = set(self.initializers) | {i.name for i in self.graph.inputs}
        self._functions = []
        for node in self.graph.nodes:
            where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOnnx(f"{where}: domain {node.domain!r} is not supported")
            if node.op_type not in OPS:
                raise UnsupportedOnnx(
                    f"{where}: op {node.op_type} is not supported; supported ops: {', '.join(sorted(OPS))}"
                )
            try:
                function = for_opset(node.op_type, self.opset)
            except NotImplementedError as error:
                raise UnsupportedOnnx(f"{where}: {error}") from None
            accepted = {
                p.name for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY
            } - RUNNER_KEYWORDS
            unknown = set(node.attributes) - accepted
            if unknown:
                raise UnsupportedOnnx(f"{where}: attribute(s) {', '.join(sorted(unknown))} not supported")
            # ONNX lists nodes in an order where every value is made before it is read: a value read
            # before (or without) being made is a broken graph, or a cycle.
            for name in node.inputs:
                if name and name not in known:
                    raise OnnxFormatError(
                        f"{where}: input {name!r} is not made by an earlier node, an "
                        "initializer or a graph input"
                    )
            if not any(node.outputs):
                raise OnnxFormatError(f"{where}: has no outputs")
            for name in node.outputs:
                if name and name in known:
                    raise OnnxFormatError(f"{where}: output {name!r} is already defined")
                known.add(name)
            self._functions.append(function)
        for name in self.outputs:
            if name not in known:
                raise OnnxFormatError(f"graph output {name!r} is not made by any node")

    def _liveness(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for index, node in enumerate(self.graph.nodes):
            for name in node.inputs:
                if name:
                    last[name] = index
        for name in self.outputs:
            last[name] = len(self.graph.nodes)
        return last

    def _schedule(self) -> list[tuple]:
        """Per node, everything the run loop needs, resolved once: the op, its inputs (trailing
        optional ones dropped), attributes, outputs, the values that die after it, and the input (if
        any) its result may overwrite."""
        last_use, steps = self._liveness(), []
        in_place = self._in_place_inputs(last_use)
        producer = {output: index for index, node in enumerate(self.graph.nodes) for output in node.outputs}
        margins = self._depthwise_margins(in_place, producer)
        phases = self._column_phases(producer)
        for index, node in enumerate(self.graph.nodes):
            inputs = list(node.inputs)
            while inputs and not inputs[-1]:
                inputs.pop()
            frees = tuple(
                dict.fromkeys(
                    name
                    for name in node.inputs
                    if name and last_use.get(name) == index and name not in self.initializers
                )
            )
            kwargs = _kwargs(node)
            if index in margins:
                kwargs["margin_rows"] = margins[index]
            kwargs.update(phases.get(index, {}))
            function = self._functions[index]
            weights_only = all(not name or name in self.initializers for name in inputs[1:])
            prepare = PREPARED.get(node.op_type) if weights_only and inputs else None
            steps.append(
                (
                    function,
                    tuple(inputs),
                    kwargs,
                    tuple(node.outputs),
                    frees,
                    in_place.get(index),
                    prepare,
                    node,
                )
            )
        return steps

    def _in_place_inputs(self, last_use: dict[str, int]) -> dict[int, str]:
        """Node index -> the input its result may be written over: one that dies at that node and whose
        memory nothing else live shares. Initializers, graph inputs and Constant outputs are never
        written; Reshape / Flatten / Identity return views, so their outputs share their input's memory
        (tracked as groups of names that may share memory)."""
        group: dict[str, int] = {}  # value -> its memory group
        members: dict[int, list[str]] = {}
        protected = set(self.initializers) | {i.name for i in self.graph.inputs}
        chosen = {}
        for index, node in enumerate(self.graph.nodes):
            target = None
            if node.op_type in IN_PLACE_OPS:
                for name in node.inputs[: IN_PLACE_OPS[node.op_type]]:
                    if (
                        name
                        and name in group
                        and last_use.get(name) == index
                        and all(
                            last_use.get(other, -1) < index for other in members[group[name]] if other != name
                        )
                    ):
                        target = name
                        break
            if target is not None:
                chosen[index] = target
                shared = group[target]
            elif node.op_type in VIEW_OPS and node.inputs[0] in group:
                shared = group[node.inputs[0]]
            else:
                shared = len(members)
                members[shared] = []
            if node.op_type == "Constant" or (node.op_type in VIEW_OPS and node.inputs[0] not in group):
                continue  # the node's own attribute, or a view of something never written
            for output in node.outputs:
                if output and output not in protected:
                    group[output] = shared
                    members[shared].append(output)
        return chosen

    def _conv_weights(self, node) -> np.ndarray | None:
        """A 2-D Conv's weights when they are in the file (the plans below need their shape), else None."""
        weights = self.initializers.get(node.inputs[1]) if len(node.inputs) > 1 else None
        return weights if node.op_type == "Conv" and weights is not None and weights.ndim == 4 else None

    def _is_depthwise(self, node) -> bool:
        """One filter per channel (group = channels), explicit pads."""
        weights = self._conv_weights(node)
        attributes = node.attributes
        return (
            weights is not None
            and weights.shape[1] == 1
            and attributes.get("group", 1) == weights.shape[0]
            and attributes.get("auto_pad", "NOTSET") == "NOTSET"
        )

    def _is_pointwise(self, node) -> bool:
        """A 1x1 convolution of all channels (group 1)."""
        weights = self._conv_weights(node)
        return weights is not None and weights.shape[2:] == (1, 1) and node.attributes.get("group", 1) == 1

    def _depthwise_margins(self, in_place: dict[int, str], producer: dict[str, int]) -> dict[int, int]:
        """Node index of a Conv -> zero rows to lay its output out with: the most any depthwise
        convolution reading it (directly or through in-place ops) pads above or below, plus one.
        ``producer``: value -> index of the node that makes it."""
        margins: dict[int, int] = {}
        for node in self.graph.nodes:
            if not self._is_depthwise(node):
                continue
            pads = node.attributes.get("pads") or (0, 0, 0, 0)
            rows = max(pads[0], pads[2]) + 1
            source = producer.get(node.inputs[0])
            while source is not None and in_place.get(source) is not None:
                source = producer.get(in_place[source])
            if source is not None and self.graph.nodes[source].op_type == "Conv":
                margins[source] = max(margins.get(source, 0), rows)
        return margins

    def _column_phases(self, producer: dict[str, int]) -> dict[int, dict[str, int]]:
        """Node index -> runner keywords for column phases: a 1x1 Conv whose output reaches a
        depthwise convolution with horizontal stride P > 1 (and fewer than DIRECT_COLUMNS_FROM channels)
        only through unary elementwise ops, and that nothing else reads (nor any value on the way, nor
        the graph's outputs), stores its columns in P phases (``column_phases``); the depthwise is told
        (``input_column_phases``)."""
        readers: dict[str, list[int]] = {}
        for index, node in enumerate(self.graph.nodes):
            for name in dict.fromkeys(node.inputs):
                if name:
                    readers.setdefault(name, []).append(index)
        outputs = set(self.outputs)
        plan: dict[int, dict[str, int]] = {}
        for index, node in enumerate(self.graph.nodes):
            stride = (node.attributes.get("strides") or (1, 1))[-1]
            if (
                not self._is_depthwise(node)
                or tuple(node.attributes.get("dilations") or (1, 1)) != (1, 1)
                or stride < 2
                or self._conv_weights(node).shape[0] >= DIRECT_COLUMNS_FROM  # reads its columns directly
            ):
                continue
            value, reader = node.inputs[0], index
            while value not in outputs and readers.get(value) == [reader] and value in producer:
                source = self.graph.nodes[producer[value]]
                if self._is_pointwise(source):
                    plan.setdefault(producer[value], {})["column_phases"] = stride
                    plan.setdefault(index, {})["input_column_phases"] = stride
                    break
                if source.op_type not in UNARY_OPS:
                    break
                value, reader = source.inputs[0], producer[value]
        return plan

    # -- running -----------------------------------------------------------------------------------
    def check_input(self, x: np.ndarray) -> np.ndarray:
        spec = self.inputs[0]
        if spec.elem_type not in DTYPES:
            raise UnsupportedOnnx(
                f"input {spec.name!r}: element type {dtype_name(spec.elem_type)} is not supported"
            )
        dtype = np.dtype(DTYPES[spec.elem_type])
        if dtype.kind == "f":
            x = np.asarray(x, dtype=dtype)  # images in any float precision, as the model declares
        elif np.asarray(x).dtype != dtype:
            raise ValueError(f"input {spec.name!r} must be {dtype}, got {np.asarray(x).dtype}")
        if len(spec.shape) and x.ndim != len(spec.shape):
            raise ValueError(
                f"input {spec.name!r} needs {len(spec.shape)} dimensions {spec.shape}, got {x.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, x.shape, strict=False)):
            if isinstance(want, int) and want > 0 and want != got:
                what = {1: "channels", 2: "height", 3: "width"}.get(axis, f"dimension {axis}")
                raise ValueError(f"input {spec.name!r} needs {what} = {want}, got {got} (shape {x.shape})")
        return x

    def _check_feeds(self, feeds: dict) -> dict:
        """Each graph input fed once, as an array of the element type it declares."""
        declared = {i.name: i for i in self.inputs}
        extra = set(feeds) - set(declared)
        missing = set(declared) - set(feeds)
        if extra or missing:
            raise ValueError(
                f"inputs: the model takes {sorted(declared)}; missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        checked = {}
        for name, value in feeds.items():
            elem_type = declared[name].elem_type
            if elem_type not in DTYPES:
                raise UnsupportedOnnx(
                    f"input {name!r}: element type {dtype_name(elem_type)} is not supported"
                )
            value = np.asarray(value)
            if value.dtype != np.dtype(DTYPES[elem_type]):
                raise ValueError(f"input {name!r} must be {dtype_name(elem_type)}, got {value.dtype}")
            checked[name] = value
        return checked

    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        if not isinstance(feeds, dict):
            feeds = {self.inputs[0].name: self.check_input(feeds)}
        else:
            feeds = self._check_feeds(feeds)
        values: dict[str, np.ndarray] = dict(self.initializers)
        values.update(feeds)
        # Ops in PREPARED are set up once per input shape (their geometry and weight layouts) and the
        # result kept: every intermediate shape follows from the inputs' shapes.
        shapes = tuple((name, np.shape(value), np.asarray(value).dtype.str) for name, value in feeds.items())
        prepared = self._prepared.pop(shapes, None) or [None] * len(self._steps)
        for index, (function, inputs, kwargs, outputs, frees, overwrite, prepare, node) in enumerate(
            self._steps
        ):
            try:
                if prepare is not None:
                    if prepared[index] is None:
                        prepared[index] = prepare(
                            *[values[name] if name else None for name in inputs], **kwargs
                        )
                    result = prepared[index](values[inputs[0]])
                elif overwrite is not None:
                    result = function(
                        *[values[name] if name else None for name in inputs], out=values[overwrite], **kwargs
                    )
                else:
                    result = function(*[values[name] if name else None for name in inputs], **kwargs)
            except NotImplementedError as error:
                raise UnsupportedOnnx(
                    f"node {node.name or '(unnamed)'!r} ({node.op_type}): {error} is not supported"
                ) from None
            if isinstance(result, tuple):
                values.update(zip(outputs, result, strict=False))
            else:
                values[outputs[0]] = result
            for name in frees:
                del values[name]
        if len(self._prepared) >= PREPARED_SHAPES:  # many shapes: keep the most recently used few
            self._prepared.pop(next(iter(self._prepared)))
        self._prepared[shapes] = prepared
        return [_contiguous(values[name]) for name in self.outputs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[0]

    # -- metadata ----------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        return metadata.class_names(self.metadata)

    @property
    def preprocessing(self) -> dict:
        return metadata.preprocessing(self.metadata)

    @property
    def resolution(self) -> int:
        shape = self.inputs[0].shape
        return (
            shape[2]
            if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0
            else self.preprocessing["crop"]
        )


def load(path: str | os.PathLike) -> OnnxModel:
    return OnnxModel(path)
