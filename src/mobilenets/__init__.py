"""mobilenets: MobileNet V1, V2 and V3 built from the papers' tables, with their numbers."""

from .blocks import DepthwiseSeparable, InvertedResidual
from .checkpoint import load, save
from .convert import convert
from .layers import ConvBNAct, SqueezeExcite, hard_sigmoid, hard_swish, make_divisible
from .model import FeatureExtractor, FeatureInfo, MobileNet
from .optimize import fuse
from .profile import Profile, profile_module
from .zoo import FAMILIES, VARIANTS, Variant, create_model, get_variant, list_models

__version__ = "0.1.0"

__all__ = [
    "ConvBNAct",
    "DepthwiseSeparable",
    "FAMILIES",
    "FeatureExtractor",
    "FeatureInfo",
    "InvertedResidual",
    "MobileNet",
    "Profile",
    "SqueezeExcite",
    "VARIANTS",
    "Variant",
    "create_model",
    "get_variant",
    "hard_sigmoid",
    "hard_swish",
    "list_models",
    "load",
    "save",
    "convert",
    "fuse",
    "make_divisible",
    "profile_module",
]
