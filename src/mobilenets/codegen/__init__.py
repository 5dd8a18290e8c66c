"""Dependency-free C99 from an exported ONNX model (:mod:`.plan` plans, :mod:`.writer` writes, the C is in
csrc/), and the same C as WebAssembly in a web page (:mod:`.site`, the page in site/); strings and numbers
from the file reach the C source only through :mod:`.literals`."""

from .plan import SUPPORTED, CodegenError
from .site import Site, build_wasm, write_site
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
    "Site",
    "build",
    "build_shared_library",
    "build_wasm",
    "check_output_folder",
    "generate",
    "write_site",
]
