"""ExecuTorch export: a .pte program lowered to XNNPACK, fp32 or int8, verified with the ExecuTorch runtime.

An optional extra (``pip install executorch``): ExecuTorch is PyTorch's own path to phones and edge
boards. The graph goes through ``torch.export``, int8 uses the XNNPACK quantizer (per-channel symmetric
weights) with calibration on probe images, and ``to_edge_transform_and_lower`` delegates to XNNPACK.
The report lists the ops that were *not* delegated, because an undelegated graph is the usual reason
ExecuTorch runs slower than expected (pytorch/executorch#4005).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..nn.fuse import fuse
from .export import probe_inputs, resolve_model


@dataclass
class ExecuTorchReport:
    path: Path
    quantized: bool
    max_abs_diff: float
    relative_diff: float
    delegated_ops: int
    undelegated_ops: list[str]

    @property
    def summary(self) -> str:
        kind = "int8 (XNNPACK quantizer)" if self.quantized else "fp32"
        left = ", ".join(self.undelegated_ops) if self.undelegated_ops else "none"
        return (
            f"{kind}, XNNPACK delegate; ExecuTorch runtime vs PyTorch: max difference {self.max_abs_diff:.2e} "
            f"({self.relative_diff:.2e} of the largest logit); ops not delegated: {left}"
        )


def _require_executorch():
    try:
        import executorch  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "ExecuTorch export needs the optional dependency: pip install executorch"
        ) from error


def export_executorch(
    source,
    path: str | os.PathLike,
    *,
    quantize: bool = False,
    resolution: int | None = None,
    calibration_batches: int = 8,
) -> ExecuTorchReport:
    """Lower ``source`` to an XNNPACK-delegated .pte program and check it with the ExecuTorch runtime."""
    _require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = resolve_model(source).eval()
    resolution = resolution or getattr(getattr(model, "preprocessing", None), "crop", 224)
    example = (probe_inputs(1, resolution),)
    graph_module = fuse(model, channels_last=False)
    if quantize:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        captured = torch.export.export(graph_module, example).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(captured, quantizer)
        for i in range(calibration_batches):
            prepared(probe_inputs(4, resolution, seed=100 + i))
        graph_module = convert_pt2e(prepared)
    program = torch.export.export(graph_module, example)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    undelegated = sorted(
        {
            str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
            for node in edge.exported_program().graph.nodes
            if node.op == "call_function"
            and "executorch_call_delegate" not in str(node.target)
            and "getitem" not in str(node.target)
        }
    )
    delegated = sum(
        1 for node in edge.exported_program().graph.nodes if "executorch_call_delegate" in str(node.target)
    )
    buffer = edge.to_executorch().buffer
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer)
    x = probe_inputs(2, resolution, seed=7)
    got = torch.cat([run_pte(path, x[i : i + 1]) for i in range(len(x))])
    with torch.no_grad():
        expected = model(x)
    max_abs = float((got - expected).abs().max())
    return ExecuTorchReport(
        path, quantize, max_abs, max_abs / float(expected.abs().max()), delegated, undelegated
    )


def run_pte(path: str | os.PathLike, x: torch.Tensor) -> torch.Tensor:
    """Run a .pte program with the ExecuTorch runtime (its Python bindings)."""
    _require_executorch()
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    return method.execute([x.contiguous()])[0]


def executorch_runner(model, workdir: Path, resolution: int, batch: int):
    """A timing callable for `mobilenets bench --backends executorch` (batch fixed at export)."""
    _require_executorch()
    from executorch.runtime import Runtime

    path = Path(workdir) / f"model_b{batch}.pte"
    if not path.exists():
        export_executorch(model, path, resolution=resolution)
    method = Runtime.get().load_program(path).load_method("forward")
    x = torch.randn(1, 3, resolution, resolution)
    return lambda: [method.execute([x]) for _ in range(batch)]
