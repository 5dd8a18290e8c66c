"""Our model's weighted layers in forward order: the one map every source library's names hang on.

:func:`layer_slots` walks a MobileNet once (stem, each block's expand / depthwise / SE / project, the
last conv, V3's head, the classifier); each ``from_*`` module names those slots in its library's terms
(anchors section 3.1). :class:`SourceArch` records what a source's weights need from ``build_model``
(anchors section 3.3: TF 'same' padding and BN eps 1e-3, input scaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..nn.blocks import DepthwiseSeparable
from ..nn.layers import ConvBNAct
from .preprocessing import Preprocessing


@dataclass(frozen=True)
class SourceArch:
    """A source library's model name, the registry name it maps to, and the options its weights need."""

    arch: str
    options: dict = field(default_factory=dict)
    preprocessing: Preprocessing = Preprocessing()


TF_OPTIONS = {"padding": "same", "bn_eps": 1e-3}
TIMM_OPTIONS = {"bn_eps": 1e-5}
TIMM_PREPROCESSING = Preprocessing(interpolation="bicubic")


@dataclass(frozen=True)
class Slot:
    """One weighted layer of our model: module path, what it is, and which part of which block."""

    module: str
    kind: str  # "conv" | "bn" | "linear"
    part: str  # "stem", "expand", "depthwise", "se_reduce", "se_expand", "project", "pointwise", "last", "head", "classifier"
    block: int | None = None
    role: str = ""  # "conv" or "bn" within a conv-BN pair


def layer_slots(model: nn.Module) -> list[Slot]:
    slots: list[Slot] = []

    def conv_bn(path: str, part: str, block: int | None = None) -> None:
        slots.append(Slot(f"{path}.conv", "conv", part, block, "conv"))
        slots.append(Slot(f"{path}.bn", "bn", part, block, "bn"))

    conv_bn("stem", "stem")
    for i, block in enumerate(model.blocks):
        if isinstance(block, DepthwiseSeparable):
            conv_bn(f"blocks.{i}.depthwise", "depthwise", i)
            conv_bn(f"blocks.{i}.pointwise", "pointwise", i)
            continue
        if isinstance(block.expand, ConvBNAct):
            conv_bn(f"blocks.{i}.expand", "expand", i)
        conv_bn(f"blocks.{i}.depthwise", "depthwise", i)
        if not isinstance(block.se, nn.Identity):
            slots.append(Slot(f"blocks.{i}.se.conv_reduce", "conv", "se_reduce", i))
            slots.append(Slot(f"blocks.{i}.se.conv_expand", "conv", "se_expand", i))
        conv_bn(f"blocks.{i}.project", "project", i)
    if isinstance(model.last_conv, ConvBNAct):
        conv_bn("last_conv", "last")
    if isinstance(model.head, nn.Linear):
        slots.append(Slot("head", "linear", "head"))
    if isinstance(model.classifier, nn.Linear):
        slots.append(Slot("classifier", "linear", "classifier"))
    return slots


def has_expand(model: nn.Module, i: int) -> bool:
    return not isinstance(model.blocks[i], DepthwiseSeparable) and isinstance(
        model.blocks[i].expand, ConvBNAct
    )


def has_se(model: nn.Module, i: int) -> bool:
    return not isinstance(model.blocks[i], DepthwiseSeparable) and not isinstance(
        model.blocks[i].se, nn.Identity
    )


# ---------------------------------------------------------------------------------------------------
# Source names for each slot
