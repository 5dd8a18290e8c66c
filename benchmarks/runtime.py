"""The runtimes that need nothing installed, against ONNX Runtime: single thread, batch 1, 224x224.

- the NumPy-only runner (mobilenets.runtime), target: at most 2x ONNX Runtime's time;
- the generated C (mobilenets compile-c, -O3 -march=native), target: at most 1.0x (when a C compiler
  and the generator are available).

All runners are pinned to one thread (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set before NumPy loads) and
interleaved in rounds, in several passes spread over minutes (the host's speed changes every 30-60 s).
Writes benchmarks/results/runtime.md.

    python benchmarks/runtime.py [--rounds 7] [--passes 6] [--pause 15]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mobilenets import create_model  # noqa: E402
from mobilenets.deploy.export import OnnxSession, export_onnx  # noqa: E402
from mobilenets.runtime import OnnxModel  # noqa: E402

from common import c_target, interleaved, machine, paired_ratio, write_results  # noqa: E402

NAMES = ("mobilenet_v1_100", "mobilenet_v2_100", "mobilenet_v3_large_100", "mobilenet_v3_small_100")


def c_runner(onnx_path: Path, work: Path):
    """A callable running the generated C on one image, or None when it cannot be built here."""
    try:
        from mobilenets.codegen import build_shared_library
    except ImportError:
        return None
    return build_shared_library(onnx_path, work / (onnx_path.stem + "_c"))


def sizes(work: Path) -> list[str]:
    """Arena and binary size per variant, including V3-Small at microcontroller-class resolutions."""
    try:
        from mobilenets.codegen import build, generate
    except ImportError:
        return []
    rows = []
    for name, resolution in [
        *((n, 224) for n in NAMES),
        ("mobilenet_v3_small_100", 128),
        ("mobilenet_v3_small_100", 96),
        ("mobilenet_v3_small_050", 96),
    ]:
        path = export_onnx(create_model(name), work / f"{name}_{resolution}.onnx", resolution=resolution).path
        generated = generate(path, work / f"{name}_{resolution}_c")
        binary = build(generated.folder)
        rows.append(
            f"| {name} | {resolution}x{resolution} | {generated.weight_bytes / 2**20:.2f} | "
            f"{generated.arena_bytes / 2**10:.0f} | {binary.stat().st_size / 2**20:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per model and pass")
    parser.add_argument("--passes", type=int, default=6, help="passes over the three models")
    parser.add_argument("--pause", type=float, default=15.0, help="seconds between passes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    atexit.register(shutil.rmtree, work, True)  # exports and builds: ~0.5 GB a run, gone at exit
    models = {}
    for name in NAMES:
        path = export_onnx(create_model(name), work / f"{name}.onnx").path
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        session, numpy_model = OnnxSession(path, threads=1), OnnxModel(path)
        runners = {"onnxruntime": lambda s=session, x=x: s(x), "numpy": lambda m=numpy_model, x=x: m(x)}
        compiled = c_runner(path, work)
        if compiled is not None:
            runners["c"] = lambda run=compiled, x=x: run(x)
        models[name] = runners
    # The host switches between a fast and a slow mode every 30-60 s, and the NumPy runner (more passes
    # over memory) slows down more than ONNX Runtime in the slow one: passes spread over minutes sample
    # both, and the table gives the range of the per-pass ratios as well as their median.
    times = {name: {runner: [] for runner in runners} for name, runners in models.items()}
    ratios = {
        name: {runner: [] for runner in runners if runner != "onnxruntime"}
        for name, runners in models.items()
    }
    for index in range(args.passes):
        if index:
            time.sleep(args.pause)
        for name, runners in models.items():
            measured = interleaved(runners, args.rounds, 5, warmup=2)
            for runner, seconds in measured.items():
                times[name][runner] += seconds
                if runner != "onnxruntime":
                    ratios[name][runner].append(paired_ratio(seconds, measured["onnxruntime"]))
        print(
            f"pass {index + 1}/{args.passes}:",
            {n: {k: f"{v[-1]:.2f}x" for k, v in r.items()} for n, r in ratios.items()},
        )
    rows = []
    for name in models:
        ms = {k: statistics.median(v) * 1e3 for k, v in times[name].items()}
        row = f"| {name} | {ms['onnxruntime']:.2f} |"
        for runner, target in (("numpy", 2.0), ("c", 1.0)):
            if runner not in ratios[name]:
                row += " - | - | - | - |"
                continue
            per_pass = ratios[name][runner]
            ratio = statistics.median(per_pass)
            row += (
                f" {ms[runner]:.2f} | {ratio:.2f}x | {min(per_pass):.2f}-{max(per_pass):.2f}x |"
                f" {'meets' if ratio <= target else 'misses'} |"
            )
        rows.append(row)
        print(row, flush=True)
    body = "\n".join(
        [
            f"Median latency (ms), batch 1, 224x224, one thread for every runner: {args.passes} passes over the",
            f"models, {args.pause:.0f} s apart, each {args.rounds} interleaved rounds per model. Ratio to ONNX Runtime:",
            "the median of the per-pass ratios (each the median of its rounds), and their range.",
            "Targets: NumPy <= 2x, generated C <= 1.0x.",
            "",
            "| model | ONNX Runtime | NumPy runner | ratio | range | target (<= 2x) | generated C | ratio | range |"
            " target (<= 1x) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    size_rows = sizes(work)
    body += "\n".join(
        [
            "",
            "",
            "## Generated C: memory and binary size (fp32, batch 1)",
            "",
            "The arena is the one static buffer all activations share (a liveness plan); the binary holds the weights.",
            "",
            "| model | input | weights (MiB) | activation arena (KiB) | binary (MiB) |",
            "|---|---|---|---|---|",
            *size_rows,
        ]
    )
    print(
        write_results(
            "runtime",
            "NumPy runner and generated C against ONNX Runtime (1 thread, batch 1)",
            body,
            machine() | {"generated C built for": c_target()},
        )
    )


if __name__ == "__main__":
    main()
