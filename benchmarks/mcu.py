"""The dumbphone end (issue 16): what the integer-only C needs on a Cortex-M4, and how fast it runs here.

1. Sizes. Each model is built with calibrated random BN (sizes do not depend on the values), exported,
   quantized by `mobilenets quantize` (8-bit weights) and compiled by `compile-c`. RAM is the activation
   arena plus one int32 accumulator row (model.h); flash is `arm-none-eabi-size` text + data of the
   Cortex-M4 image: weights, code and newlib-nano's printf. Each image also runs in QEMU (mps2-an386)
   and must print what the host build prints. Beside them, TensorFlow Lite Micro's person detector.
2. Host speed, one thread, -O3 -march=native: the int8 C against the float C and ONNX Runtime running the
   same QDQ file (V2 and V3-Small at 224, 1000 classes), interleaved rounds in passes spread over
   minutes, median of the per-pass paired ratios. Targets: int8 C at most 0.6x the float C and at most
   1.0x ONNX Runtime int8.

    python benchmarks/mcu.py [--passes 5] [--pause 10]

Writes benchmarks/results/mcu.md. Needs cc, make, gcc-arm-none-eabi, libnewlib-arm-none-eabi and
qemu-system-arm (Debian packages).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import mobilenets  # noqa: E402
from mobilenets.codegen import build_shared_library, generate  # noqa: E402
from mobilenets.codegen.int8plan import plan_int8  # noqa: E402
from mobilenets.deploy.export import OnnxSession, export_onnx  # noqa: E402
from mobilenets.deploy.quantize import quantize  # noqa: E402

from common import c_target, interleaved, machine, onnxruntime_version, paired_ratio, write_results  # noqa: E402

# (name, arch, resolution, input channels, classes): TFLite Micro's person detector and the table.
SIZE_MODELS = [
    ("V1 0.25 person detector", "mobilenet_v1_025", 96, 1, 2),
    ("V2 0.35", "mobilenet_v2_035", 96, 1, 2),
    ("V2 0.35", "mobilenet_v2_035", 128, 1, 2),
    ("V3-Small 0.35", "mobilenet_v3_small_035", 96, 1, 2),
    ("V3-Small 0.35", "mobilenet_v3_small_035", 128, 1, 2),
    ("V3-Small 0.5", "mobilenet_v3_small_050", 96, 1, 2),
    ("V3-Small 0.5", "mobilenet_v3_small_050", 128, 1, 2),
]
SPEED_MODELS = ["mobilenet_v2_100", "mobilenet_v3_small_100"]
RUNNERS = ("int8 C", "float C", "ORT int8")
RAM_TARGET, FLASH_TARGET = 64 * 1024, 300 * 1024


def calibration_images(folder: Path, count: int, size: int) -> Path:
    """Upsampled low-resolution colour noise: structure at every scale, for calibrating random models."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{index}.png")
    return folder


def int8_model(work: Path, arch: str, resolution: int, channels: int, classes: int) -> tuple[Path, Path]:
    """(float ONNX, int8 QDQ ONNX) of ``arch`` with calibrated random BN."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from parity import randomize_batchnorm

    torch.manual_seed(0)
    model = mobilenets.create_model(arch, in_chans=channels, num_classes=classes).eval()
    model = randomize_batchnorm(model, seed=1, resolution=resolution)
    stem = f"{arch}_{resolution}_{channels}"
    export_onnx(model, work / f"{stem}.onnx", resolution=resolution)
    images = calibration_images(work / f"calibration_{resolution}", 32, resolution + resolution // 7)
    report = quantize(work / f"{stem}.onnx", work / f"{stem}.int8.onnx", images, reduce_range=False)
    return work / f"{stem}.onnx", report.path


def make(folder: Path, *targets: str) -> str:
    result = subprocess.run(["make", "-s", *targets], cwd=folder, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"make {' '.join(targets)} in {folder} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def size_row(work: Path, label: str, arch: str, resolution: int, channels: int, classes: int) -> str:
    _, int8 = int8_model(work, arch, resolution, channels, classes)
    generated = generate(int8, work / f"c_{arch}_{resolution}")
    folder = generated.folder
    make(folder, "test-host")
    host = subprocess.run([str(folder / "test-host")], capture_output=True, text=True, check=True).stdout
    text, data, _ = (int(v) for v in make(folder, "cortex-m4").strip().splitlines()[-1].split()[:3])
    same = make(folder, "qemu-m4") == host
    flash = text + data
    fits = "yes" if generated.ram_bytes <= RAM_TARGET and flash <= FLASH_TARGET else "no"
    separate = plan_int8(int8, in_place=False)[0].ram_bytes
    return (
        f"| {label} | {resolution}x{resolution}x{channels} | {generated.ram_bytes / 1024:.1f} | "
        f"{separate / 1024:.1f} | "
        f"{generated.weight_bytes / 1024:.1f} | {flash / 1024:.1f} | {fits} | {'yes' if same else 'NO'} |"
    )


def speed_rows(work: Path, passes: int, pause: float) -> list[str]:
    """Each model's three runners interleaved, in ``passes`` passes ``pause`` seconds apart (the host
    switches between a fast and a slow mode every 30-60 s); ratios are the median of the per-pass
    paired ratios, with their range."""
    runners, inputs = {}, np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for arch in SPEED_MODELS:
        fp32, int8 = int8_model(work, arch, 224, 3, 1000)
        runners[arch] = {
            "int8 C": build_shared_library(int8, work / f"speed_{arch}_int8"),
            "float C": build_shared_library(fp32, work / f"speed_{arch}_float"),
            "ORT int8": OnnxSession(int8, threads=1),
        }
    times = {arch: {name: [] for name in RUNNERS} for arch in SPEED_MODELS}
    ratios = {arch: {"float C": [], "ORT int8": []} for arch in SPEED_MODELS}
    for index in range(passes):
        if index:
            time.sleep(pause)
        for arch in SPEED_MODELS:
            measured = interleaved(
                {n: partial(run, inputs) for n, run in runners[arch].items()}, rounds=7, iters=3
            )
            for name, seconds in measured.items():
                times[arch][name] += seconds
            for theirs in ratios[arch]:
                ratios[arch][theirs].append(paired_ratio(measured["int8 C"], measured[theirs]))
        print(
            f"pass {index + 1}/{passes}:",
            {a: {k: f"{v[-1]:.2f}" for k, v in r.items()} for a, r in ratios.items()},
        )
    rows = []
    for arch in SPEED_MODELS:
        ms = {name: float(np.median(values)) * 1e3 for name, values in times[arch].items()}
        cells = []
        for theirs, target in (("float C", 0.6), ("ORT int8", 1.0)):
            per_pass = ratios[arch][theirs]
            ratio = statistics.median(per_pass)
            verdict = "meets" if ratio <= target else "misses"
            cells.append(f"{ratio:.2f} ({min(per_pass):.2f}-{max(per_pass):.2f}) {verdict}")
        rows.append(
            f"| {arch} | {ms['int8 C']:.1f} | {ms['float C']:.1f} | {ms['ORT int8']:.1f} | {cells[0]} | {cells[1]} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5, help="speed passes over the models")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between speed passes")
    args = parser.parse_args()
    for tool in ("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            sys.exit(
                f"needs {tool}: apt-get install -y gcc make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
            )
    torch.set_num_threads(1)
    info = machine() | {"onnxruntime": onnxruntime_version(), "generated C built for": c_target()}
    info["arm-none-eabi-gcc"] = subprocess.run(
        ["arm-none-eabi-gcc", "-dumpversion"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = []
        for model in SIZE_MODELS:
            sizes.append(size_row(work, *model))
            print(sizes[-1], flush=True)
        speeds = speed_rows(work, args.passes, args.pause)
    body = "\n".join(
        [
            "## Sizes on a Cortex-M4 (int8, 8-bit weights, integer-only C)",
            "",
            "RAM: the activation arena (depthwise and 1x1 steps write over their input where that lowers it),",
            "the scratch rows (the stem's patches, in-place rings and blocks) and one int32 accumulator row;",
            "beside it the same model with a room per tensor. Flash: `arm-none-eabi-size` text + data of the",
            "whole Cortex-M4 image (weights, code, newlib-nano's printf). QEMU: the mps2-an386 image printed",
            "exactly what the host build printed. Targets: RAM at most 64 KB, flash at most 300 KB. Not done:",
            "`--patches` (MCUNetV2's patch-by-patch first stages, the 32 KB stretch).",
            "",
            "| model | input | RAM KiB | RAM KiB, a room per tensor | weights KiB | M4 flash KiB | "
            "fits 64 KB / 300 KB | QEMU = host |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *sizes,
            "| TFLite Micro person detection (reference) | 96x96x1 | 136 (arena) | - | ~250-300 (model) | "
            "model + interpreter | no | - |",
            "",
            "## Host speed, one thread (-O3 -march=native), 224x224, batch 1",
            "",
            f"Median ms per image over {args.passes} passes {args.pause:.0f} s apart, each 7 interleaved rounds;",
            "ratios: the median of the per-pass paired ratios (their range in brackets).",
            "",
            "| model | int8 C | float C | ONNX Runtime int8 | int8 C / float C (target <= 0.6) | "
            "int8 C / ORT int8 (target <= 1.0) |",
            "| --- | --- | --- | --- | --- | --- |",
            *speeds,
        ]
    )
    print(write_results("mcu", "Integer-only C for microcontrollers (benchmarks/mcu.py)", body, info))


if __name__ == "__main__":
    main()
