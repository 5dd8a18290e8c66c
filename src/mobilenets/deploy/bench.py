"""One timing harness for every backend: PyTorch (eager, fused), ONNX Runtime (fp32, int8), OpenVINO.

Per backend and batch size: warm-up, then at least ``min_runs`` timed runs (and at least ``min_seconds``),
reporting the median and 90th-percentile latency, images/s, GMAC/s and the share of this machine's
measured peak (a large fp32 GEMM in PyTorch; int8 through ONNX Runtime's MatMulInteger). Thread counts
are set explicitly for every backend, so the comparison is like for like.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

BACKENDS = (
    "torch",
    "torch-fused",
    "onnxruntime",
    "onnxruntime-int8",
    "openvino",
    "openvino-int8",
    "executorch",
)


@dataclass
class Timing:
    backend: str
    batch: int
    threads: int
    median_ms: float
    p90_ms: float
    images_per_s: float
    gmacs_per_s: float
    peak_percent: float  # of the measured fp32 (or int8) peak
    runs: int


def time_function(
    fn: Callable[[], object], warmup: int = 5, min_runs: int = 30, min_seconds: float = 1.0
) -> list[float]:
    """Seconds per call over at least ``min_runs`` calls and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@cache
def peak_gflops(threads: int, kind: str = "fp32") -> float:
    """Measured peak multiply-adds per second (G): fp32 GEMM in PyTorch, int8 MatMulInteger in ONNX Runtime."""
    n = 1024
    if kind == "fp32":
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = min(time_function(lambda: a @ b, warmup=3, min_runs=10, min_seconds=0.5))
        torch.set_num_threads(previous)
        return n**3 / best / 1e9
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "peak",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {
        "a": np.random.randint(0, 255, (n, n), dtype=np.uint8),
        "b": np.random.randint(-127, 127, (n, n), dtype=np.int8),
    }
    best = min(time_function(lambda: session.run(None, feeds), warmup=3, min_runs=10, min_seconds=0.5))
    del onnx
    return n**3 / best / 1e9


VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {
        "cpu": cpu,
        # The vector extensions decide which kernels oneDNN, MLAS and the generated C run.
        "cpu flags": ", ".join(name for name in VECTOR_FLAGS if name in flags)
        or "unknown (no /proc/cpuinfo)",
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for module in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            info[module] = __import__(module).__version__
    return info


class Runner:
    """Builds a callable per backend for a model (nn.Module) or an exported ONNX file."""

    def __init__(
        self,
        source,
        resolution: int,
        threads: int,
        calibration: str | None = None,
        workdir: str | None = None,
    ):
        from .export import resolve_model

        self.threads, self.resolution, self.calibration = threads, resolution, calibration
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mobilenets-bench-"))
        self.onnx_path: Path | None = None
        self.model = None
        if str(source).endswith(".onnx"):
            self.onnx_path = Path(source)
        else:
            self.model = resolve_model(source).eval()
        self._int8: Path | None = None

    def _onnx(self) -> Path:
        if self.onnx_path is None:
            from .export import export_onnx

            self.onnx_path = self.workdir / "model.onnx"
            export_onnx(self.model, self.onnx_path, resolution=self.resolution)
        return self.onnx_path

    def _onnx_int8(self) -> Path:
        if self._int8 is None:
            from .quantize import quantize

            calibration = self.calibration or _synthetic_calibration(
                self.workdir / "calibration", self.resolution
            )
            self._int8 = self.workdir / "model.int8.onnx"
            quantize(self._onnx(), self._int8, calibration, max_images=64)
        return self._int8

    def build(self, backend: str, batch: int) -> Callable[[], object]:
        x = np.random.default_rng(0).standard_normal(
            (batch, 3, self.resolution, self.resolution), dtype=np.float32
        )
        if backend in ("torch", "torch-fused"):
            if self.model is None:
                raise ValueError(f"backend {backend} needs a PyTorch model, not an ONNX file")
            from ..nn.fuse import fuse

            model = fuse(self.model) if backend == "torch-fused" else self.model
            tensor = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

            def run():
                with torch.inference_mode():
                    model(tensor)

            return run
        if backend in ("onnxruntime", "onnxruntime-int8"):
            from .export import OnnxSession

            session = OnnxSession(
                self._onnx_int8() if backend.endswith("int8") else self._onnx(), threads=self.threads
            )
            return lambda: session(x)
        if backend in ("openvino", "openvino-int8"):
            compiled = openvino_compile(
                self._onnx_int8() if backend.endswith("int8") else self._onnx(),
                self.threads,
                precision="f32" if backend == "openvino" else None,
            )
            request = compiled.create_infer_request()
            return lambda: request.infer({0: x})
        if backend == "executorch":
            from .executorch import executorch_runner

            return executorch_runner(self.model, self.workdir, self.resolution, batch)
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def openvino_compile(onnx_path: Path, threads: int, precision: str | None = "f32"):
    """OpenVINO reads ONNX directly. ``precision="f32"`` forces fp32 for parity checks; "bf16" on request;
    None keeps the file's own precision (int8 for a QDQ model)."""
    try:
        import openvino as ov
    except ImportError as error:
        raise ImportError("the openvino backend needs `pip install openvino`") from error
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(core.read_model(str(onnx_path)), "CPU", config)


def _synthetic_calibration(folder: Path, resolution: int) -> Path:
    """Without user images, calibrate on the demo generator's pictures (nothing downloaded)."""
    from ..data.demo import image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(64):
        image("train", i, size=max(resolution, 96))[0].save(folder / f"{i:03d}.png")
    return folder


def benchmark(
    source,
    backends: list[str],
    batches: list[int],
    threads: int,
    resolution: int = 224,
    calibration: str | None = None,
    min_runs: int = 30,
) -> list[Timing]:
    """Time ``source`` on each backend and batch size; MACs come from the PyTorch model (or the file's arch)."""
    torch.set_num_threads(threads)
    runner = Runner(source, resolution, threads, calibration)
    madds = _madds(runner, resolution)
    timings = []
    for backend in backends:
        for batch in batches:
            fn = runner.build(backend, batch)
            times = time_function(fn, min_runs=min_runs)
            median, p90 = statistics.median(times), float(np.percentile(times, 90))
            gmacs = madds * batch / median / 1e9
            peak = peak_gflops(threads, "int8" if backend.endswith("int8") else "fp32")
            timings.append(
                Timing(
                    backend,
                    batch,
                    threads,
                    median * 1e3,
                    p90 * 1e3,
                    batch / median,
                    gmacs,
                    100 * gmacs / peak,
                    len(times),
                )
            )
    return timings


def _madds(runner: Runner, resolution: int) -> int:
    from ..numbers.profile import profile_module

    if runner.model is not None:
        return profile_module(runner.model, resolution).madds
    from ..nn.registry import build_model
    from .export import read_metadata

    arch = read_metadata(runner.onnx_path).arch
    if arch is None:  # a file without our metadata: the multiply-adds are not known, the timings still are
        return 0
    try:
        return profile_module(build_model(arch), resolution).madds
    except ValueError:
        return 0


def timings_markdown(timings: list[Timing]) -> str:
    rows = [
        f"| {t.backend} | {t.batch} | {t.threads} | {t.median_ms:.2f} | {t.p90_ms:.2f} | {t.images_per_s:.1f} | "
        f"{t.gmacs_per_s:.1f} | {t.peak_percent:.0f}% |"
        for t in timings
    ]
    return "\n".join(
        [
            "| backend | batch | threads | median ms | p90 ms | images/s | GMAC/s | % of peak |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


def timings_json(timings: list[Timing]) -> list[dict]:
    return [asdict(t) for t in timings]


def zoo_latency_plot(
    path: str | os.PathLike, threads: int, resolution: int = 224, names: list[str] | None = None
) -> list[dict]:
    """Latency (torch-fused, batch 1) against MAdds for the zoo, as a PNG; returns the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..nn.registry import VARIANTS, build_model

    torch.set_num_threads(threads)
    points = []
    for name in names or list(VARIANTS):
        runner = Runner(build_model(name), resolution, threads)
        times = time_function(runner.build("torch-fused", 1), warmup=3, min_runs=15, min_seconds=0.3)
        points.append(
            {
                "name": name,
                "madds": VARIANTS[name].madds * (resolution / 224) ** 2,
                "median_ms": statistics.median(times) * 1e3,
            }
        )
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for family, marker in (
        ("mobilenet_v1", "s"),
        ("mobilenet_v2", "o"),
        ("mobilenet_v3_large", "^"),
        ("mobilenet_v3_small", "v"),
    ):
        chosen = [p for p in points if p["name"].startswith(family + "_") and "minimal" not in p["name"]]
        if chosen:
            ax.plot(
                [p["madds"] / 1e6 for p in chosen], [p["median_ms"] for p in chosen], marker, label=family
            )
    for p in points:
        ax.annotate(
            p["name"].replace("mobilenet_", ""),
            (p["madds"] / 1e6, p["median_ms"]),
            fontsize=6,
            xytext=(3, 2),
            textcoords="offset points",
        )
    ax.set(
        xlabel="multiply-adds (M)",
        ylabel=f"latency, batch 1, {threads} threads (ms)",
        title=f"Latency against MAdds at {resolution}x{resolution} (PyTorch, BN folded)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return points
