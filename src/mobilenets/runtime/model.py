"""Run an ONNX model with NumPy alone: parse, check every op is supported, execute in graph order.

Values are freed after their last use (a liveness plan over the node list), so peak memory is the largest
set of live activations, not their sum.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np

from .ops import OPS
from .protobuf import OnnxFormatError, parse_model


class UnsupportedOnnx(NotImplementedError):
    """An op, attribute or attribute value this runner does not implement; the message names the node."""


def _kwargs(node) -> dict:
    return {key: value for key, value in node.attributes.items()}


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

    def _check_supported(self) -> None:
        for node in self.graph.nodes:
            where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOnnx(f"{where}: domain {node.domain!r} is not supported")
            function = OPS.get(node.op_type)
            if function is None:
                raise UnsupportedOnnx(
                    f"{where}: op {node.op_type} is not supported; supported ops: {', '.join(sorted(OPS))}"
                )
            accepted = {
                p.name for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY
            }
            unknown = set(node.attributes) - accepted
            if unknown:
                raise UnsupportedOnnx(f"{where}: attribute(s) {', '.join(sorted(unknown))} not supported")

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
        optional ones dropped), attributes, outputs, and the values that die after it."""
        last_use, steps = self._liveness(), []
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
            steps.append((OPS[node.op_type], tuple(inputs), _kwargs(node), tuple(node.outputs), frees, node))
        return steps

    # -- running -----------------------------------------------------------------------------------
    def check_input(self, x: np.ndarray) -> np.ndarray:
        spec = self.inputs[0]
        x = np.asarray(x, dtype=np.float32)
        if len(spec.shape) and x.ndim != len(spec.shape):
            raise ValueError(
                f"input {spec.name!r} needs {len(spec.shape)} dimensions {spec.shape}, got {x.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, x.shape, strict=False)):
            if isinstance(want, int) and want > 0 and want != got:
                what = {1: "channels", 2: "height", 3: "width"}.get(axis, f"dimension {axis}")
                raise ValueError(f"input {spec.name!r} needs {what} = {want}, got {got} (shape {x.shape})")
        return x

    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        if not isinstance(feeds, dict):
            feeds = {self.inputs[0].name: self.check_input(feeds)}
        values: dict[str, np.ndarray] = dict(self.initializers)
        values.update(feeds)
        for function, inputs, kwargs, outputs, frees, node in self._steps:
            try:
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
        return [np.ascontiguousarray(values[name]) for name in self.outputs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[0]

    # -- metadata ----------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        names = self.metadata.get("class_names")
        return json.loads(names) if names else None

    @property
    def preprocessing(self) -> dict:
        default = {
            "resize": 256,
            "crop": 224,
            "interpolation": "bilinear",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        }
        text = self.metadata.get("preprocessing")
        return {**default, **json.loads(text)} if text else default

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
