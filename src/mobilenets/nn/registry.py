"""The model registry: one entry per named variant, one hop from name to model.

Each :class:`Variant` records its exact parameter count (1000 classes) and multiply-adds (224 x 224), and
the published ImageNet top-1 with its source; ``tests/nn/test_registry.py`` recomputes the counts from the code.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .detection import DETECTION_PREFIX, SSDLite, init_normal, is_detection_name
from .network import FeatureExtractor, MobileNet
from .scaling import NetworkPlan, plan_v1, plan_v2, plan_v3
from .segmentation import (
    DEEPLAB_PREFIX,
    LRASPP,
    DeepLabV3,
    is_segmentation_name,
    segmentation_backbone_name,
)


@dataclass(frozen=True)
class Family:
    """An architecture family: its table-to-plan function, the widths it is registered at, its defaults."""

    name: str
    planner: Callable[[float], NetworkPlan]
    widths: tuple[float, ...]
    bn_eps: float  # torchvision's default for the family (V3 1e-3, V1/V2 1e-5)
    bn_momentum: float  # V3 trains with BN decay 0.99 (V3 Section 6.1) = momentum 0.01
    paper: str


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "mobilenet_v1", plan_v1, (0.25, 0.5, 0.75, 1.0), 1e-5, 0.1, "https://arxiv.org/abs/1704.04861"
        ),
        Family(
            "mobilenet_v2",
            plan_v2,
            (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
            1e-5,
            0.1,
            "https://arxiv.org/abs/1801.04381",
        ),
        Family(
            "mobilenet_v3_large",
            partial(plan_v3, "V3_LARGE_TABLE_1"),
            (0.35, 0.5, 0.75, 1.0, 1.25),
            1e-3,
            0.01,
            "https://arxiv.org/abs/1905.02244",
        ),
        Family(
            "mobilenet_v3_small",
            partial(plan_v3, "V3_SMALL_TABLE_2"),
            (0.35, 0.5, 0.75, 1.0, 1.25),
            1e-3,
            0.01,
            "https://arxiv.org/abs/1905.02244",
        ),
        Family(
            "mobilenet_v3_large_minimal",
            partial(plan_v3, "V3_LARGE_TABLE_1", minimalistic=True),
            (1.0,),
            1e-3,
            0.01,
            "https://github.com/tensorflow/models/tree/master/research/slim/nets/mobilenet",
        ),
        Family(
            "mobilenet_v3_small_minimal",
            partial(plan_v3, "V3_SMALL_TABLE_2", minimalistic=True),
            (1.0,),
            1e-3,
            0.01,
            "https://github.com/tensorflow/models/tree/master/research/slim/nets/mobilenet",
        ),
    )
}


@dataclass(frozen=True)
class Variant:
    """A registered model: family and width, its exact cost, and the published accuracy."""

    name: str
    family: str
    width: float
    params: int  # trainable parameters at 1000 classes, BN gamma/beta included
    madds: int  # multiply-adds at 224 x 224 (mobilenets.profile convention)
    top1: float  # published ImageNet top-1 (%) at 224
    top1_source: str
    resolution: int = 224

    def plan(self) -> NetworkPlan:
        return FAMILIES[self.family].planner(self.width)


def _name(family: str, width: float) -> str:
    return f"{family}_{round(width * 100):03d}"


# name -> Variant. params / madds are exact; top-1 as published (source in top1_source).
_P1, _P2, _P3, _SLIM = "V1 Table 6", "V2 Table 4", "V3 Table 9", "TF-Slim README"
_VARIANTS = [
    ("mobilenet_v1", 0.25, 470_072, 41_030_272, 50.6, _P1),
    ("mobilenet_v1", 0.5, 1_331_592, 149_497_088, 63.7, _P1),
    ("mobilenet_v1", 0.75, 2_585_560, 325_400_448, 68.4, _P1),
    ("mobilenet_v1", 1.0, 4_231_976, 568_740_352, 70.6, _P1),
    ("mobilenet_v2", 0.35, 1_677_128, 59_285_808, 60.3, _SLIM),
    ("mobilenet_v2", 0.5, 1_968_680, 97_131_840, 65.4, _SLIM),
    ("mobilenet_v2", 0.75, 2_636_424, 209_069_792, 69.8, _SLIM),
    ("mobilenet_v2", 1.0, 3_504_872, 300_774_272, 72.0, _P2),
    ("mobilenet_v2", 1.3, 5_386_792, 509_374_560, 74.4, _SLIM),
    ("mobilenet_v2", 1.4, 6_108_776, 582_195_824, 74.7, _P2),
    ("mobilenet_v3_large", 0.35, 2_131_832, 39_472_336, 64.2, _P3),
    ("mobilenet_v3_large", 0.5, 2_689_520, 69_247_600, 68.8, _P3),
    ("mobilenet_v3_large", 0.75, 3_993_528, 154_560_624, 73.3, _P3),
    ("mobilenet_v3_large", 1.0, 5_483_032, 216_589_760, 75.2, _P3),
    ("mobilenet_v3_large", 1.25, 8_256_296, 355_925_920, 76.6, _P3),
    ("mobilenet_v3_small", 0.35, 1_358_288, 12_815_840, 49.8, _P3),
    ("mobilenet_v3_small", 0.5, 1_592_704, 21_052_560, 58.0, _P3),
    ("mobilenet_v3_small", 0.75, 2_041_872, 43_399_344, 65.4, _P3),
    ("mobilenet_v3_small", 1.0, 2_542_856, 56_510_400, 67.5, _P3),
    ("mobilenet_v3_small", 1.25, 3_645_960, 91_241_184, 70.4, _P3),
    ("mobilenet_v3_large_minimal", 1.0, 3_924_288, 209_136_704, 72.3, _SLIM),
    ("mobilenet_v3_small_minimal", 1.0, 2_044_736, 52_288_448, 61.9, _SLIM),
]
VARIANTS: dict[str, Variant] = {
    _name(family, width): Variant(_name(family, width), family, width, params, madds, top1, source)
    for family, width, params, madds, top1, source in _VARIANTS
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names, optionally filtered by a glob pattern ("mobilenet_v3_*")."""
    import fnmatch

    return [name for name in VARIANTS if fnmatch.fnmatch(name, pattern)]


def get_variant(name: str) -> Variant:
    """The registry entry for ``name``, or a ValueError that says what is allowed."""
    if name in VARIANTS:
        return VARIANTS[name]
    match = re.fullmatch(r"(mobilenet_v\d(?:_large|_small)?(?:_minimal)?)_(\d{3})", name)
    if match and match.group(1) in FAMILIES:
        family = FAMILIES[match.group(1)]
        widths = ", ".join(f"{w:g}" for w in family.widths)
        raise ValueError(
            f"{match.group(1)} has no variant at width {int(match.group(2)) / 100:g}; "
            f"widths: {widths} ({', '.join(_name(family.name, w) for w in family.widths)})"
        )
    close = difflib.get_close_matches(name, list(VARIANTS), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} (mobilenets.list_models() lists all {len(VARIANTS)})")


def build_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float = 0.2,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
    padding: str = "symmetric",
    output_stride: int = 32,
    memory_format: str = "channels_last",
    head_conv: bool = True,
    reduced_tail: bool = False,
    atrous_style: str = "slim",
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    feature_location: str = "bottleneck",
) -> MobileNet | FeatureExtractor:
    """Build a registered model by name with fresh weights: name -> Variant -> plan -> MobileNet.

    ``bn_eps`` / ``bn_momentum`` default to the family's (torchvision's) values; ``padding="same"`` and
    ``bn_eps=1e-3`` match TensorFlow / Keras-trained weights. ``features_only=True`` returns a backbone
    whose forward gives the multi-scale maps (``out_indices`` of ``feature_info_for(feature_location)``).
    ``head_conv=False`` (V3) drops the 1x1 conv after pooling, as a Keras base with include_top=False.
    ``reduced_tail=True`` halves the last stage (V3's RF2, for detection and segmentation backbones).
    Weights are composed on top of this by :func:`mobilenets.create_model` (``mobilenets.weights``).
    """
    if is_segmentation_name(name):
        raise ValueError(f"{name} is a segmentation model: build it with build_segmentation_model")
    if is_detection_name(name):
        raise ValueError(f"{name} is a detection model: build it with build_detection_model")
    variant = get_variant(name)
    family = FAMILIES[variant.family]
    model = MobileNet(
        variant.plan(),
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
        bn_eps=family.bn_eps if bn_eps is None else bn_eps,
        bn_momentum=family.bn_momentum if bn_momentum is None else bn_momentum,
        padding=padding,
        output_stride=output_stride,
        memory_format=memory_format,
        head_conv=head_conv,
        atrous_style=atrous_style,
        reduced_tail=reduced_tail,
    )
    model.variant, model.arch = variant, name
    if features_only:
        return FeatureExtractor(model, out_indices, feature_location)
    return model


def build_segmentation_model(
    name: str,
    *,
    num_classes: int = 21,
    segmentation_channels: int | None = None,
    output_stride: int = 16,
    atrous_style: str = "slim",
    aux_classifier: bool = False,
    pool_kernel: int | tuple[int, int] | None = None,
    pool_stride: int | tuple[int, int] | None = None,
    **options,
) -> LRASPP | DeepLabV3:
    """``lraspp_<variant>`` (V3 Section 6.4's LR-ASPP, 128 channels by default) or ``deeplabv3_<variant>``
    (DeepLabv3's ASPP head, 256 channels, as V2 Section 6.3 evaluates it), e.g. "lraspp_mobilenet_v3_large"
    or "deeplabv3_mobilenet_v2_035": the variant at ``output_stride`` 16 or 8 with that head; ``options``
    go to the backbone. ``aux_classifier`` (DeepLabv3) adds torchvision's auxiliary head. ``pool_kernel``
    / ``pool_stride`` (LR-ASPP) pool the gate over regions, as V3 Figure 10 (49x49 at (16, 20)), instead
    of globally (torchvision)."""
    if not is_segmentation_name(name):
        raise ValueError(f"{name!r} is not a segmentation model: its name starts with lraspp_ or deeplabv3_")
    backbone = build_model(
        segmentation_backbone_name(name),
        num_classes=0,
        output_stride=output_stride,
        atrous_style=atrous_style,
        **options,
    )
    if name.startswith(DEEPLAB_PREFIX):
        if pool_kernel is not None or pool_stride is not None:
            raise ValueError(
                "pool_kernel and pool_stride are LR-ASPP options; DeepLabv3's ASPP pools globally"
            )
        return DeepLabV3(backbone, num_classes, segmentation_channels or 256, aux_classifier)
    if aux_classifier:
        raise ValueError("aux_classifier is a DeepLabv3 option; LR-ASPP has no auxiliary head")
    return LRASPP(backbone, num_classes, segmentation_channels or 128, pool_kernel, pool_stride)


def build_detection_model(
    name: str,
    *,
    num_classes: int = 91,
    reduced_tail: bool = False,
    first_map_boxes: int = 6,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
    **options,
) -> SSDLite:
    """``ssdlite_<variant>`` (V2 Section 6.2, V3 Section 6.3), e.g. "ssdlite_mobilenet_v3_large" or
    "ssdlite_mobilenet_v2_050": the variant at output stride 32 with SSDLite's extra layers and heads,
    91 classes (COCO's ids, 0 = background) by default. BN uses TF's detection settings (eps 1e-3,
    momentum 0.03) as torchvision's ``ssdlite320_mobilenet_v3_large`` does; with ``reduced_tail=True``
    (V3's "†" rows in Table 6) the network is torchvision's (3,440,060 parameters at 91 classes).
    ``first_map_boxes=3`` is TF's layout (3 default boxes per cell on the first map), as the papers'
    Table 6 rows were counted."""
    if not is_detection_name(name):
        raise ValueError(f"{name!r} is not a detection model: its name starts with ssdlite_")
    backbone = build_model(
        segmentation_backbone_name(name.removeprefix(DETECTION_PREFIX)),
        num_classes=0,
        reduced_tail=reduced_tail,
        bn_eps=1e-3 if bn_eps is None else bn_eps,
        bn_momentum=0.03 if bn_momentum is None else bn_momentum,
        **options,
    )
    # From scratch, the whole network starts as TF's object detection API and torchvision start SSDLite
    # without a pretrained backbone: N(0, 0.03) conv weights. Measured on the demo's boxes (V3-Large,
    # 225 steps): the classifier's He init reached loss 5.19, this 4.23, torchvision's own model 4.31.
    # Pretrained weights (create_model(weights=...), convert) replace it.
    init_normal(backbone)
    return SSDLite(backbone, num_classes, first_map_boxes=first_map_boxes)


def build_from_config(arch: str, **config) -> MobileNet | LRASPP:
    """A model from a checkpoint's recorded config: classification or segmentation by its name."""
    if is_segmentation_name(arch):
        return build_segmentation_model(arch, **config)
    if is_detection_name(arch):
        return build_detection_model(arch, **config)
    return build_model(arch, **config)
