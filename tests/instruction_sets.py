"""Builds of the generated C for each instruction set whose kernels differ, where this CPU can run them."""

from pathlib import Path

import pytest


def cpu_has(*flags: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    return all(f" {flag}" in text for flag in flags)


def _needs(*flags: str):
    return pytest.mark.skipif(not cpu_has(*flags), reason=f"the CPU lacks {' '.join(flags)}")


# Plain C; AVX2 (8-float vectors; for int8, plain loops the compiler vectorises); AVX-512 VNNI without
# VBMI (Cascade Lake: 16-float vectors, vpdpbusd, int8 tables in plain C); whatever this CPU has.
BUILDS = [
    pytest.param(("-O2",), id="plain"),
    pytest.param(("-O3", "-march=haswell"), id="avx2", marks=_needs("avx2")),
    pytest.param(("-O3", "-march=cascadelake"), id="avx512-vnni", marks=_needs("avx512_vnni", "avx512bw")),
    pytest.param(("-O3", "-march=native"), id="native"),
]


def vector_flags() -> list[tuple[str, ...]]:
    """The float C's vector paths this CPU can run: 8-float vectors (AVX2) and 16 (AVX-512)."""
    flags = [("-O3", "-march=haswell")] if cpu_has("avx2") else []
    if cpu_has("avx512f", "avx512bw"):
        flags.append(("-O3", "-march=skylake-avx512"))
    return flags or [("-O2",)]
