"""Shared benchmark plumbing: machine metadata, interleaved paired timing, markdown results files.

These machines are noisy and the host flips between a fast and a slow mode every 30-60 s, so compared
runs are interleaved in short rounds (A, B, B, A, ...) and the reported figure is the median of the
per-round ratios: both sides of a ratio ran within the same second.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, str]:
    """Date, CPU, cores, threads and library versions (mobilenets.deploy.bench.machine_info plus the date)."""
    import torch

    from mobilenets.deploy.bench import machine_info

    info = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    info |= {k: str(v) for k, v in machine_info(torch.get_num_threads()).items()}
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def c_target(cc: str = "cc") -> str:
    """The instruction set the generated C is built for here (-O3 -march=native), read from the compiler's
    target macros as the kernels choose their paths: AVX-512, AVX2, NEON or none."""
    import subprocess

    try:
        macros = subprocess.run(
            [cc, "-O3", "-march=native", "-dM", "-E", "-x", "c", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "no C compiler"
    defined = {line.split()[1] for line in macros.splitlines() if line.startswith("#define ")}
    if "__AVX512F__" in defined:
        int8 = "AVX-512 VNNI (vpdpbusd)" if "__AVX512VNNI__" in defined else "plain loops"
        return f"AVX-512: float 16-float vectors, 12 x 32 1x1 blocks; int8 {int8}"
    if "__AVX2__" in defined:
        return "AVX2: float 8-float vectors, 6 x 16 1x1 blocks; int8 plain loops (compiler-vectorised)"
    if "__ARM_NEON" in defined:
        return "NEON: float 8-float vectors (two registers), 6 x 16 1x1 blocks; int8 plain loops"
    return "no vector extension: plain loops"


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int = 7, iters: int = 5, warmup: int = 3
) -> dict[str, list[float]]:
    """Per-call seconds of each function: ``rounds`` rounds of ``iters`` calls, order alternating per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            times[name].append((time.perf_counter() - start) / iters)
    return times


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over rounds of ours / theirs (each pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def ratio_spread(ours: list[float], theirs: list[float]) -> str:
    """Quartiles of the per-round ratios, "q1-q3", to show how much the host's noise moved them."""
    q1, _, q3 = statistics.quantiles([a / b for a, b in zip(ours, theirs, strict=True)], n=4)
    return f"{q1:.2f}-{q3:.2f}"


def ratio_row(runtime: str, times: dict[str, list[float]], theirs: str = "torchvision") -> str:
    """A results-table row: medians of ours and theirs (ms), the paired ratio, its quartiles, the verdict
    against the target ratio <= 1.0."""
    ms_ours, ms_theirs = (statistics.median(times[k]) * 1e3 for k in ("ours", theirs))
    ratio = paired_ratio(times["ours"], times[theirs])
    verdict = "meets" if ratio <= 1.0 else "misses"
    return (
        f"| {runtime} | {ms_ours:.1f} | {ms_theirs:.1f} | {ratio:.3f} | "
        f"{ratio_spread(times['ours'], times[theirs])} | {verdict} |"
    )


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def write_results(name: str, title: str, body: str, info: dict[str, str]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    meta = "\n".join(f"- {k}: {v}" for k, v in info.items())
    path.write_text(f"# {title}\n\n{meta}\n\n{body}\n")
    return path
