"""mobilenets: MobileNet V1, V2 and V3 built from the papers' tables, with their numbers.

The public names below are imported lazily (PEP 562), so ``import mobilenets.runtime`` (the NumPy-only
runner) works on a machine without PyTorch, and the command line starts quickly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ConvBNAct": "nn.layers",
    "SqueezeExcite": "nn.layers",
    "hard_sigmoid": "nn.layers",
    "hard_swish": "nn.layers",
    "make_divisible": "nn.layers",
    "DepthwiseSeparable": "nn.blocks",
    "InvertedResidual": "nn.blocks",
    "FeatureExtractor": "nn.network",
    "FeatureInfo": "nn.network",
    "MobileNet": "nn.network",
    "FAMILIES": "nn.registry",
    "VARIANTS": "nn.registry",
    "Variant": "nn.registry",
    "get_variant": "nn.registry",
    "list_models": "nn.registry",
    "fuse": "nn.fuse",
    "create_model": "weights.factory",
    "load": "weights.checkpoint",
    "save": "weights.checkpoint",
    "convert": "weights.convert",
    "Profile": "numbers.profile",
    "profile_module": "numbers.profile",
}
# The parts (docs/architecture.md); ``mobilenets.runtime`` needs NumPy only.
_SUBMODULES = {"nn", "weights", "numbers", "data", "training", "deploy", "runtime", "codegen"}

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
