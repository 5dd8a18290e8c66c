"""int8 post-training quantization of an exported ONNX model with ONNX Runtime's static quantizer.

QDQ format, per-channel int8 weights, uint8 activations, ONNX Runtime's pre-processing step (shape
inference and graph optimisation), and percentile calibration: min/max calibration lets a few outlier
activations (h-swish outputs, SE gates) stretch the scale, which is how V3 loses most of its accuracy in
per-tensor PTQ (anchors section 4, issue 2). Parts that are sensitive can stay in float: ``keep_float``
takes name fragments such as ``"/se/"`` (the squeeze-excite branches).

Weights use 7 bits of the int8 range by default (``reduce_range``). x86 CPUs without VNNI (AVX2, most
AVX-512) multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds pairs of products into
a saturating int16: two full-range products (255 * 127 * 2) overflow it and the output is silently
clipped. ONNX Runtime's CPU kernels take that path, and on the trained demo model it flips 1.7% of the
top-1 predictions (98.3% agreement with fp32); with 7-bit weights the pair sum fits and agreement is
99.7% (benchmarks/results/deploy.md). VNNI (``vpdpbusd``) and ARM dot-product kernels accumulate in int32
and do not saturate (OpenVINO on this AVX2 CPU also kept 99.3% with 8 bits); pass ``reduce_range=False``
for the extra bit there.

The API follows ``onnxruntime.quantization.quantize_static``: path in, path out, a calibration source.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.folders import BadImage, list_images, load_image, scan
from .export import OnnxSession, read_metadata

CALIBRATION_METHODS = ("percentile", "minmax", "entropy")


@dataclass
class QuantizeReport:
    path: Path
    calibration_images: int
    agreement: float  # top-1 of int8 == top-1 of fp32, on the calibration images
    kept_float: list[str] = field(default_factory=list)
    fp32_top1: float | None = None  # on the labelled folder, when given
    int8_top1: float | None = None
    labelled_agreement: float | None = None  # int8 top-1 == fp32 top-1 on the labelled folder
    labelled_images: int = 0
    bad_files: list[str] = field(default_factory=list)
    method: str = "percentile"  # the calibration actually used
    weight_bits: int = 7  # 7 with reduce_range (the default), else 8


def spread(files: list[str], count: int) -> list[str]:
    """``count`` files evenly spaced over the sorted list, so that a class-per-folder tree is calibrated
    on every class (the first ``count`` files would all come from the first folders)."""
    if count <= 0:
        raise ValueError(f"max_images must be at least 1, got {count}")
    if len(files) <= count:
        return files
    return [files[int(i)] for i in np.linspace(0, len(files) - 1, count).round()]


def _images(paths: list[str], transform, bad: list[str]) -> Iterator[np.ndarray]:
    for path in paths:
        try:
            yield transform(load_image(path)).numpy()[None]
        except BadImage as error:
            bad.append(str(error))


class FolderCalibrationReader:
    """An onnxruntime CalibrationDataReader over a folder of images, preprocessed as the model expects."""

    def __init__(self, input_name: str, images: list[np.ndarray]):
        self.input_name, self.images, self.index = input_name, images, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.input_name: self.images[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def _transform(info):
    size = info.resolution or info.preprocessing.crop
    from ..data.folders import eval_transform

    return eval_transform(size, info.preprocessing.for_channels(info.in_chans))


def quantize(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration: str | os.PathLike,
    *,
    method: str = "percentile",
    per_channel: bool = True,
    keep_float: tuple[str, ...] = (),
    max_images: int = 300,
    labelled: str | os.PathLike | None = None,
    percentile: float = 99.999,
    reduce_range: bool = True,
) -> QuantizeReport:
    """Quantize ``model_path`` into ``output`` using images under ``calibration``; see the module docstring."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile must be above 50 and at most 100, got {percentile}")
    weight_bits = 7 if reduce_range else 8
    info = read_metadata(model_path)
    transform = _transform(info)
    # Every input is checked before anything is written: a bad --labelled folder must not leave an
    # output behind after the work that made it.
    labelled_set = _labelled(labelled, info.class_names) if labelled is not None else None
    files = spread(list_images(calibration), max_images)
    bad: list[str] = []
    images = list(_images(files, transform, bad))
    if not images:
        raise ValueError(f"no readable images under {calibration} to calibrate with")
    output = Path(output)
    if output.resolve() == Path(model_path).resolve():
        raise ValueError(f"-o {output} is the model being quantized; choose another output file")
    output.parent.mkdir(parents=True, exist_ok=True)
    original = onnx.load(str(model_path))
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=False)
        nodes = onnx.load(str(prepared)).graph.node
        excluded = [n.name for n in nodes if any(fragment in n.name for fragment in keep_float)]
        input_name = original.graph.input[0].name
        tmp_out = Path(work) / "int8.onnx"
        methods = {
            "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
        }

        def run(chosen: str) -> None:
            quantize_static(
                str(prepared),
                str(tmp_out),
                FolderCalibrationReader(input_name, images),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                calibrate_method=methods[chosen],
                nodes_to_exclude=excluded,
                extra_options={"CalibPercentile": percentile},
            )

        used = method
        try:
            run(method)
        except ValueError as error:
            # Histogram calibration cannot bin a tensor whose values are all equal (a dead ReLU, say).
            if "bins" not in str(error) or method == "minmax":
                raise
            warnings.warn(
                f"{method} calibration failed ({error}); calibrated with minmax instead", stacklevel=2
            )
            used = "minmax"
            run(used)
        quantized = onnx.load(str(tmp_out))
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(original.metadata_props)
        quantized.metadata_props.add(
            key="quantization",
            value=f"int8 QDQ per-channel={per_channel} weight-bits={weight_bits} calib={used}",
        )
        onnx.save(quantized, str(tmp_out))
        os.replace(tmp_out, output)

    fp32, int8 = OnnxSession(model_path), OnnxSession(output)
    batch = np.concatenate(images)
    agreement = float((fp32(batch).argmax(1) == int8(batch).argmax(1)).mean())
    report = QuantizeReport(
        output, len(images), agreement, excluded, bad_files=bad, method=used, weight_bits=weight_bits
    )
    if labelled_set is not None:
        (report.fp32_top1, report.int8_top1, report.labelled_agreement, report.labelled_images) = _accuracy(
            fp32, int8, labelled_set, transform, bad
        )
    return report


def _labelled(folder, model_classes: list[str] | None) -> tuple[list[str], list, list[str]]:
    """(folder classes, samples, the model's class names) of a labelled folder, checked: it has images,
    and only classes the model knows."""
    classes, samples = scan(Path(folder))
    if not samples:
        raise ValueError(f"--labelled {folder} holds no images")
    names = model_classes or classes
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(f"--labelled {folder} has classes the model does not know: {', '.join(unknown[:5])}")
    return classes, samples, names


def _accuracy(fp32: OnnxSession, int8: OnnxSession, labelled_set, transform, bad: list[str]):
    classes, samples, names = labelled_set
    correct_fp32 = correct_int8 = agree = total = 0
    for start in range(0, len(samples), 64):
        chunk = samples[start : start + 64]
        arrays, labels = [], []
        for path, label in chunk:
            try:
                arrays.append(transform(load_image(path)).numpy())
                labels.append(names.index(classes[label]))
            except BadImage as error:
                bad.append(str(error))
        if not arrays:
            continue
        x, y = np.stack(arrays), np.array(labels)
        predicted_fp32, predicted_int8 = fp32(x).argmax(1), int8(x).argmax(1)
        correct_fp32 += int((predicted_fp32 == y).sum())
        correct_int8 += int((predicted_int8 == y).sum())
        agree += int((predicted_fp32 == predicted_int8).sum())
        total += len(y)
    total = max(total, 1)
    return correct_fp32 / total, correct_int8 / total, agree / total, total
