"""ONNX export (opset 18, dynamic batch, BatchNorm folded, metadata) checked against PyTorch with ONNX Runtime.

Every export is verified: the ONNX file runs in ONNX Runtime on inputs the output depends on, and the
export fails (and leaves no file) if the largest difference from PyTorch exceeds 1e-4 of the largest
logit. Class names and preprocessing travel in the ONNX model's metadata, so a runtime needs nothing
else to turn an image into class names.

Needs the ``export`` extra: onnx and onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..nn.detection import DecodedDetector, SSDLite
from ..nn.fuse import fuse
from ..runtime.metadata import class_names as checked_class_names
from ..weights.checkpoint import atomic_write
from ..weights.preprocessing import DETECTION_PREPROCESSING, Preprocessing
from .onnx_cleanup import clean
from .onnx_nms import NmsSettings, append_nms, reference_nms

OPSET = 18
# HardSigmoid and Clip-with-inputs need 11; the torch.export-based exporter writes 18 and up (below that
# the TorchScript one, while torch has it); ONNX Runtime and our runner know up to 23 here.
MIN_OPSET, MAX_OPSET = 11, 23
TORCH_EXPORT_MIN_OPSET = 18
TOLERANCE = 1e-4  # max |difference| relative to the largest |logit|


class ExportError(RuntimeError):
    """The exported model disagrees with PyTorch, or could not be written."""


@dataclass
class ExportReport:
    path: Path
    opset: int
    resolution: int
    max_abs_diff: float
    relative_diff: float
    op_types: dict[str, int]
    exporter: str = "torch.export"  # or "torchscript", the deprecated fallback


def resolve_model(source: str | os.PathLike | nn.Module) -> nn.Module:
    """A model object, a native checkpoint / run folder, or a registry name (random weights)."""
    if isinstance(source, nn.Module):
        return source
    path = Path(source)
    if path.exists():
        from ..weights.checkpoint import load, resolve_checkpoint

        return load(resolve_checkpoint(path))[0].eval()
    from ..nn.registry import build_model

    return build_model(str(source))


def probe_inputs(batch: int, resolution: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (upsampled noise) that the logits depend on."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, channels, 7, 7, generator=generator)
    return torch.nn.functional.interpolate(
        low, size=(resolution, resolution), mode="bicubic", align_corners=False
    )


def export_onnx(
    source: str | os.PathLike | nn.Module,
    path: str | os.PathLike,
    *,
    resolution: int | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    tolerance: float = TOLERANCE,
    nms: NmsSettings | None = None,
) -> ExportReport:
    """Export ``source`` to ONNX at ``path`` and verify it with ONNX Runtime (see the module docstring).
    A detector with ``nms`` gets ONNX's NonMaxSuppression in the graph (:mod:`.onnx_nms`), checked
    against torchvision's NMS on the same boxes and scores."""
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be from {MIN_OPSET} to {MAX_OPSET} (the exporter's range), got {opset}")
    model = resolve_model(source).eval()
    detector = isinstance(model, SSDLite)
    if nms is not None and not detector:
        raise ValueError("--nms is for detection models (ssdlite_*): a classifier has no boxes to suppress")
    preprocessing = getattr(model, "preprocessing", None) or (
        DETECTION_PREPROCESSING if detector else Preprocessing()
    )
    resolution = resolution or preprocessing.crop
    min_resolution = getattr(model, "min_resolution", 1)
    if resolution < min_resolution:
        raise ValueError(
            f"resolution {resolution} is too small: this network needs at least {min_resolution}"
        )
    in_chans = getattr(model, "in_chans", 3)
    fused = fuse(model, channels_last=False)  # a copy
    for module in fused.modules():
        # In-place activations mean nothing in an inference graph, and torch.export decomposes each one
        # through a functionalisation pass: measured, they made V3-Small's export 2.3x slower.
        if hasattr(module, "inplace"):
            module.inplace = False
    if detector:  # boxes decoded against the default boxes of this input size, and class scores
        fused = DecodedDetector(fused, resolution)
        model = DecodedDetector(model, resolution)
    outputs = ["boxes", "scores"] if detector else ["logits"]
    dummy = probe_inputs(2, resolution, in_chans)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        exporter = _export(fused, dummy, tmp, opset, dynamic_batch, outputs)
        proto = onnx.load(str(tmp))
        clean(proto)  # plain standard ops: no shape arithmetic, no Identity, Pad folded into Conv
        if nms is not None:
            append_nms(proto, model.num_classes, nms)
        metadata = {
            "producer": "mobilenets",
            "arch": getattr(model, "arch", None) or type(model).__name__,
            "class_names": json.dumps(getattr(model, "class_names", None)),
            "preprocessing": json.dumps(preprocessing.for_channels(in_chans).to_dict()),
            "resolution": str(resolution),
            "in_chans": str(in_chans),
        }
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        max_abs, relative = compare_with_torch(model, tmp, resolution, in_chans, nms)
        if not relative <= tolerance:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch: max difference {max_abs:.3g} ({relative:.3g} of the largest "
                f"logit) exceeds {tolerance:g}; the file was not written"
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    op_types: dict[str, int] = {}
    for node in proto.graph.node:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    return ExportReport(path, opset, resolution, max_abs, relative, op_types, exporter)


def _export(
    model: nn.Module, dummy: torch.Tensor, path: Path, opset: int, dynamic_batch: bool, outputs=("logits",)
) -> str:
    """Export with torch.export-based exporter (torch.onnx.export(dynamo=True), the default since torch
    2.9); returns which exporter wrote the file. The TorchScript exporter, deprecated and due to be
    removed, is used only where the new one cannot: opsets below 18 (the new exporter writes 18 and up)
    or a model it fails on, while torch still ships it."""
    if opset >= TORCH_EXPORT_MIN_OPSET:
        try:
            _export_torch_export(model, dummy, path, opset, dynamic_batch, outputs)
            return "torch.export"
        except Exception as error:  # torch.export raises many types for a graph it cannot capture
            if not _has_torchscript_exporter():
                raise ExportError(f"the torch.export-based ONNX exporter failed: {error}") from error
            warnings.warn(
                f"the torch.export-based ONNX exporter failed ({type(error).__name__}: {error}); "
                "used the deprecated TorchScript exporter instead",
                stacklevel=3,
            )
    elif not _has_torchscript_exporter():
        raise ExportError(
            f"opset {opset} needs the TorchScript exporter, which this torch no longer has; use 18+"
        )
    _export_torchscript(model, dummy, path, opset, dynamic_batch, outputs)
    return "torchscript"


def _export_torch_export(model, dummy, path: Path, opset: int, dynamic_batch: bool, outputs) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # progress lines and notes about its own internals
        program = torch.onnx.export(
            model,
            (dummy,),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=list(outputs),
            dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))


def _has_torchscript_exporter() -> bool:
    try:
        from torch.onnx._internal import torchscript_exporter  # noqa: F401
    except ImportError:
        return False
    return True


def _export_torchscript(model, dummy, path: Path, opset: int, dynamic_batch: bool, outputs) -> None:
    with warnings.catch_warnings():
        # Shape checks in forward() are constants of the traced graph (only the batch is dynamic).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the fallback is deprecated: we know
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,  # a plain graph of standard ops, no onnxscript functions
            opset_version=opset,
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in ("input", *outputs)} if dynamic_batch else None,
            do_constant_folding=True,
        )


def compare_with_torch(
    model: nn.Module, onnx_path: Path, resolution: int, in_chans: int = 3, nms: NmsSettings | None = None
) -> tuple[float, float]:
    """(max |difference|, relative to the largest logit) of ONNX Runtime against PyTorch on 3 probe images.
    With ``nms``, the boxes ONNX Runtime's NonMaxSuppression keeps must be the ones torchvision's keeps
    (on ONNX Runtime's own boxes and scores: a 1e-6 difference in a score may reorder a tie)."""
    import onnxruntime as ort

    x = probe_inputs(3, resolution, in_chans, seed=1)
    with torch.no_grad():
        expected = model.eval()(x)
    expected = [t.numpy() for t in expected] if isinstance(expected, tuple) else [expected.numpy()]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if nms is not None:
        boxes, scores, selected = got
        kept = {tuple(int(v) for v in row) for row in selected}
        expected_kept = reference_nms(boxes, scores, nms)
        if kept != expected_kept:
            raise ExportError(
                f"ONNX Runtime's NonMaxSuppression kept {len(kept)} boxes, torchvision's NMS {len(expected_kept)} "
                f"({len(kept ^ expected_kept)} differ); the file was not written"
            )
        got = got[:2]
    # Each output against its own scale (a detector's boxes are in pixels, its scores in [0, 1]).
    worst = max(
        ((float(np.abs(g - e).max()), float(np.abs(e).max())) for g, e in zip(got, expected, strict=True)),
        key=lambda pair: pair[0] / pair[1],
    )
    return worst[0], worst[0] / worst[1]


# ---------------------------------------------------------------------------------------------------
# Reading exported files
# ---------------------------------------------------------------------------------------------------


@dataclass
class OnnxInfo:
    """What an exported file says about itself."""

    class_names: list[str] | None
    preprocessing: Preprocessing
    resolution: int | None
    in_chans: int
    arch: str | None


def read_metadata(path: str | os.PathLike) -> OnnxInfo:
    """The metadata of an ONNX file; a file that is not ONNX gives an error naming it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others for non-ONNX bytes
        raise ValueError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from None
    if not proto.graph.node:
        raise ValueError(f"{path} is not an ONNX model (no graph)")
    meta = {p.key: p.value for p in proto.metadata_props}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    in_chans = dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else int(meta.get("in_chans", 3))
    resolution = dims[2].dim_value if len(dims) == 4 and dims[2].dim_value else None
    preprocessing = (
        Preprocessing.from_dict(json.loads(meta["preprocessing"]))
        if "preprocessing" in meta
        else Preprocessing()
    )
    names = checked_class_names(meta)  # checked as the NumPy runner checks it
    return OnnxInfo(names, preprocessing, resolution, in_chans, meta.get("arch"))


class OnnxSession:
    """An ONNX Runtime session with input checks that name the problem (shape, channels, dtype)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.info = read_metadata(self.path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"{self.path.name} expects input of shape (N, C, H, W), got {x.shape}")
        if x.shape[1] != self.info.in_chans:
            raise ValueError(
                f"{self.path.name} expects {self.info.in_chans} input channels, got {x.shape[1]}"
            )
        if self.info.resolution and x.shape[2:] != (self.info.resolution, self.info.resolution):
            raise ValueError(
                f"{self.path.name} was exported for {self.info.resolution}x{self.info.resolution} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}; export again with --resolution {x.shape[2]}"
            )
        return x.astype(np.float32, copy=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: self.check(x)})[0]


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))
