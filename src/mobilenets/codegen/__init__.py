"""Dependency-free C99 from an exported ONNX model (see :mod:`.generator`); strings and numbers from the
file reach the C source only through :mod:`.literals`."""

from .generator import (
    SUPPORTED,
    CodegenError,
    GeneratedC,
    build,
    build_shared_library,
    check_output_folder,
    generate,
)

__all__ = [
    "SUPPORTED",
    "CodegenError",
    "GeneratedC",
    "build",
    "build_shared_library",
    "check_output_folder",
    "generate",
]
