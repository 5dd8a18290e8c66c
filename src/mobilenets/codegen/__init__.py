"""Dependency-free C99 from an exported ONNX model (:mod:`.plan` plans, :mod:`.writer` writes, the C is in csrc/); strings and numbers from the
file reach the C source only through :mod:`.literals`."""

from .plan import SUPPORTED, CodegenError
from .writer import (
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
