"""Latency of the grid's variants on this device and backend, measured, interleaved and cached.

NetAdapt and the V3 search measured latency on the device that would run the network (V3 paper
Section 4.2, Yang et al. 2018 Section 3): a multiply-add costs differently on each backend. Here each
point is built once (exported, compiled), warmed up, then timed in rounds that visit every point in
turn, the order reversed each round, so that a change in the host's speed (these machines flip
between a fast and a slow mode every 30-60 s) falls on all points alike; a point's latency is the
median of its per-round medians.

Results are cached per machine, backend, versions, threads and batch (a JSON file under
~/.cache/mobilenets/latency, written atomically after each round, beside the points' ONNX exports): a
re-run is instant, and an interrupted one reuses the exports and measures the points that have not had
all their rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .grid import GridPoint

BACKENDS = ("onnxruntime", "openvino", "torch", "numpy", "c")
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch", "numpy": "numpy"}


@dataclass(frozen=True)
class Measurement:
    model: str
    resolution: int
    top1: float
    source: str
    median_ms: float
    rounds: int

    @property
    def label(self) -> str:
        return f"{self.model}@{self.resolution}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilenets" / "latency"


def cache_key(backend: str, threads: int, batch: int) -> dict:
    """What a latency depends on besides the network: the machine, the backend and its version, threads."""
    from ..deploy.bench import machine_info

    info = machine_info(threads)
    key = {
        "cpu": info["cpu"],
        "cpu flags": info["cpu flags"],
        "machine": platform.machine(),
        "backend": backend,
        "threads": threads,
        "batch": batch,
        "python": info["python"],
        "numpy": np.__version__,
        "torch": info["torch"],
    }
    if backend in ("onnxruntime", "openvino"):
        key[backend] = info.get(backend, "not installed")
    if backend == "c":
        key["cc"] = _compiler_version()
    if backend == "numpy":  # NumPy's BLAS takes its threads from the environment, read when NumPy loads
        key["blas threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return key


def _compiler_version() -> str:
    import shutil
    import subprocess

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "none"
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return compiler


def _valid(entry) -> bool:
    """A cache entry as put() writes it: a positive latency and a round count."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("median_ms"), (int, float))
        and not isinstance(entry.get("rounds"), bool)
        and isinstance(entry.get("rounds"), int)
        and entry["median_ms"] > 0
    )


class LatencyCache:
    """One JSON file per cache key: {"key": {...}, "points": {"model@resolution": {...}}}."""

    def __init__(self, folder: Path, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(folder) / f"latency-{key['backend']}-{digest}.json"
        self.key = key
        self.points: dict[str, dict] = {}
        if self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
                if stored.get("key") == key:
                    self.points = {k: v for k, v in stored["points"].items() if _valid(v)}
            except (ValueError, AttributeError, KeyError, TypeError):
                pass  # a damaged cache is measured again, not trusted

    @property
    def exports(self) -> Path:
        """Where the points' ONNX exports are kept, so that a resumed run does not export them again."""
        return self.path.parent / (self.path.stem + "-exports")

    def get(self, point: GridPoint, rounds: int = 1) -> Measurement | None:
        """The point's measurement if it was timed in at least ``rounds`` rounds."""
        found = self.points.get(point.label)
        if not found or found.get("rounds", 0) < rounds:
            return None
        return Measurement(
            point.model, point.resolution, point.top1, point.source, found["median_ms"], found["rounds"]
        )

    def put(self, measurements: list[Measurement]) -> None:
        for m in measurements:
            self.points[m.label] = {"median_ms": m.median_ms, "rounds": m.rounds}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": self.key, "points": self.points}, f, indent=1)
        os.replace(temporary, self.path)  # atomic: a killed run leaves the old file or the new one


def make_runner(
    backend: str, point: GridPoint, threads: int, batch: int, workdir: Path, exports: Path
) -> Callable[[], object]:
    """A callable that runs the point's network once on a random input with the backend; ONNX exports
    are made once into ``exports`` and reused."""
    from ..nn.registry import build_model

    if backend == "torch":
        from ..deploy.bench import Runner

        model = build_model(point.model).eval()
        return Runner(model, point.resolution, threads, workdir=str(workdir)).build("torch-fused", batch)
    path = exports / f"{point.label}.onnx"
    if not path.is_file():
        from ..deploy.export import export_onnx

        exports.mkdir(parents=True, exist_ok=True)
        partial = export_onnx(
            build_model(point.model).eval(), workdir / path.name, resolution=point.resolution
        ).path
        os.replace(partial, path)  # complete files only: a killed export is made again
    if backend in ("onnxruntime", "openvino"):
        from ..deploy.bench import Runner

        return Runner(str(path), point.resolution, threads, workdir=str(workdir)).build(backend, batch)
    x = np.random.default_rng(0).standard_normal(
        (batch, 3, point.resolution, point.resolution), dtype=np.float32
    )
    if backend == "numpy":
        from ..runtime import OnnxModel

        onnx_model = OnnxModel(path)
        return lambda: onnx_model(x)
    from ..codegen import build_shared_library

    run = build_shared_library(path, workdir / f"{point.label}_c")
    return lambda: run(x)


def check_backend(backend: str, threads: int, batch: int) -> None:
    """Refuse what a backend cannot do, naming the choices; import the backend's package first so that a
    missing one is named (ImportError) before anything is built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "c" and (threads != 1 or batch != 1):
        raise ValueError(
            "the generated C runs one image on one thread: use --threads 1 --batch 1 with --backend c"
        )
    if backend in PACKAGES:
        __import__(PACKAGES[backend])
    if backend != "torch":  # the others run an ONNX export, which ONNX Runtime checks
        __import__("onnx")
        __import__("onnxruntime")


def measure_grid(
    points: list[GridPoint],
    backend: str,
    threads: int = 1,
    batch: int = 1,
    rounds: int = 5,
    runs: int = 5,
    warmup: int = 3,
    cache_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    progress: bool = True,
    workdir: str | os.PathLike | None = None,
) -> list[Measurement]:
    """Every point's latency (ms, batch ``batch``) on ``backend``: cached points from the cache, the rest
    built, warmed up and timed in ``rounds`` interleaved rounds of ``runs`` calls (see the module
    docstring). Returned in the points' order."""
    from tqdm import tqdm

    from ..deploy.bench import time_function

    check_backend(backend, threads, batch)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    cache = LatencyCache(
        Path(cache_dir) if cache_dir else default_cache_dir(), cache_key(backend, threads, batch)
    )
    missing = [p for p in points if fresh or cache.get(p, rounds) is None]
    if missing:
        with tempfile.TemporaryDirectory(prefix="mobilenets-latency-", dir=workdir) as work:
            runners = {}
            for point in tqdm(missing, desc=f"building ({backend})", disable=not progress, unit="net"):
                runners[point.label] = make_runner(backend, point, threads, batch, Path(work), cache.exports)
                for _ in range(warmup):
                    runners[point.label]()
            per_round: dict[str, list[float]] = {p.label: [] for p in missing}
            for r in tqdm(
                range(rounds), desc=f"measuring {len(missing)} networks", disable=not progress, unit="round"
            ):
                for point in missing if r % 2 == 0 else reversed(missing):
                    times = time_function(runners[point.label], warmup=0, min_runs=runs, min_seconds=0)
                    per_round[point.label].append(statistics.median(times) * 1e3)
                cache.put(
                    [
                        Measurement(
                            p.model,
                            p.resolution,
                            p.top1,
                            p.source,
                            statistics.median(per_round[p.label]),
                            r + 1,
                        )
                        for p in missing
                    ]
                )
    return [cache.get(p, rounds) for p in points]


def measurements_json(measurements: list[Measurement]) -> list[dict]:
    return [asdict(m) for m in measurements]
