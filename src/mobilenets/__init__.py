"""mobilenets: MobileNet V1, V2 and V3 built from the papers' tables, with their numbers.

The public names below are imported lazily (PEP 562), so ``import mobilenets.runtime`` (the NumPy-only
runner) works on a machine without PyTorch, and the command line starts quickly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ConvBNAct": "layers",
    "SqueezeExcite": "layers",
    "hard_sigmoid": "layers",
    "hard_swish": "layers",
    "make_divisible": "layers",
    "DepthwiseSeparable": "blocks",
    "InvertedResidual": "blocks",
    "FeatureExtractor": "model",
    "FeatureInfo": "model",
    "MobileNet": "model",
    "Profile": "profile",
    "profile_module": "profile",
    "FAMILIES": "zoo",
    "VARIANTS": "zoo",
    "Variant": "zoo",
    "create_model": "zoo",
    "get_variant": "zoo",
    "list_models": "zoo",
    "load": "checkpoint",
    "save": "checkpoint",
    "convert": "convert",
    "fuse": "optimize",
}
_SUBMODULES = {
    "demo",
    "preprocessing",
    "specs",
    "scaling",
    "published",
    "reference",
    "runtime",
    "train",
    "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mobilenets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, *_SUBMODULES, "__version__"])
