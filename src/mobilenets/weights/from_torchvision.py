"""torchvision's MobileNetV2 / V3 names for our slots (``features.{i}.block.{j}``, anchors section 3.1)."""

from __future__ import annotations

from torch import nn

from .preprocessing import DETECTION_PREPROCESSING
from .slots import SourceArch, has_expand, has_se, layer_slots

ARCHS = {
    # dilated=True backbones: the block that gives up its stride dilates too (atrous_style="torchvision").
    "lraspp_mobilenet_v3_large": SourceArch(
        "lraspp_mobilenet_v3_large_100", {"bn_eps": 1e-3, "atrous_style": "torchvision"}
    ),
    "deeplabv3_mobilenet_v3_large": SourceArch(
        "deeplabv3_mobilenet_v3_large_100", {"bn_eps": 1e-3, "atrous_style": "torchvision"}
    ),
    # BN as torchvision's SSDLite builds it (eps 1e-3, momentum 0.03); the reduced tail is read from the
    # weights (torchvision reduces it only when no pretrained backbone was given).
    "ssdlite320_mobilenet_v3_large": SourceArch(
        "ssdlite_mobilenet_v3_large_100", {"bn_eps": 1e-3, "bn_momentum": 0.03}, DETECTION_PREPROCESSING
    ),
    "mobilenet_v2": SourceArch("mobilenet_v2_100", {"bn_eps": 1e-5}),
    "mobilenet_v3_large": SourceArch("mobilenet_v3_large_100", {"bn_eps": 1e-3}),
    "mobilenet_v3_small": SourceArch("mobilenet_v3_small_100", {"bn_eps": 1e-3}),
}


def torchvision_names(model: nn.Module) -> list[str]:
    """torchvision MobileNetV2 / V3 module paths, slot by slot."""
    v3 = model.plan.head_channels is not None  # V3 (its head conv may be dropped: head_conv=False)
    last = len(model.blocks) + 1
    names = []
    for slot in layer_slots(model):
        sub = {"conv": "0", "bn": "1"}.get(slot.role, "")
        if slot.part == "stem":
            names.append(f"features.0.{sub}")
        elif slot.part == "last":
            names.append(f"features.{last}.{sub}")
        elif slot.part == "head":
            names.append("classifier.0")
        elif slot.part == "classifier":
            names.append("classifier.3" if v3 else "classifier.1")
        else:
            i = slot.block
            order = [p for p, present in (("expand", has_expand(model, i)), ("depthwise", True)) if present]
            if v3:
                order += ["se"] if has_se(model, i) else []
                order += ["project"]
                j = order.index("se" if slot.part.startswith("se_") else slot.part)
                leaf = {"se_reduce": "fc1", "se_expand": "fc2"}.get(slot.part, sub)
                names.append(f"features.{i + 1}.block.{j}.{leaf}")
            elif slot.part == "project":  # V2: the projection's conv and BN are separate entries
                j = len(order)
                names.append(f"features.{i + 1}.conv.{j if slot.role == 'conv' else j + 1}")
            else:
                names.append(f"features.{i + 1}.conv.{order.index(slot.part)}.{sub}")
    return names


def segmentation_names(model: nn.Module, backbone: nn.Module) -> dict[str, str]:
    """Our LR-ASPP / DeepLabv3 state-dict keys -> torchvision's. The backbone is ``backbone.{i}`` (its
    ``features`` kept by IntermediateLayerGetter), named slot by slot through a classifier-less twin
    (``backbone``); the heads are ``classifier.*`` (and DeepLabv3's ``aux_classifier.*``) with our
    module names below them."""
    names = {}
    modules = dict(backbone.named_modules())
    for slot, name in zip(layer_slots(backbone), torchvision_names(backbone), strict=True):
        for param in modules[slot.module].state_dict():
            names[f"{slot.module}.{param}"] = f"backbone.{name.removeprefix('features.')}.{param}"
    for key in model.head.state_dict():
        names[f"head.{key}"] = f"classifier.{key}"
    if getattr(model, "aux", None) is not None:
        for key in model.aux.state_dict():
            names[f"aux.{key}"] = f"aux_classifier.{key}"
    return names


def detection_names(model: nn.Module, backbone: nn.Module) -> dict[str, str]:
    """Our SSDLite state-dict keys -> torchvision's ``ssdlite320_mobilenet_v3_large``. torchvision splits
    its backbone's ``features`` at C4: ``backbone.features.0`` runs up to and including the C4 block's
    expansion (``block.0``), ``backbone.features.1`` holds the rest of that block (its ``block.1..``,
    keys kept) and then the later layers; ``backbone`` here is a classifier-less twin for the slots."""
    c4 = model.c4_block + 1  # torchvision's features index of the C4 block (its stem is features.0)

    def torchvision_key(name: str) -> str:
        index, _, rest = name.removeprefix("features.").partition(".")
        i = int(index)
        if i < c4:
            return f"backbone.features.0.{i}.{rest}"
        if i == c4:
            j, _, leaf = rest.removeprefix("block.").partition(".")
            return f"backbone.features.0.{c4}.{leaf}" if j == "0" else f"backbone.features.1.0.{j}.{leaf}"
        return f"backbone.features.1.{i - c4}.{rest}"

    names = {}
    modules = dict(backbone.named_modules())
    for slot, name in zip(layer_slots(backbone), torchvision_names(backbone), strict=True):
        for param in modules[slot.module].state_dict():
            names[f"backbone.{slot.module}.{param}"] = torchvision_key(f"{name}.{param}")
    layer = {"conv": "0", "bn": "1"}
    for key in model.extra.state_dict():
        k, j, part, param = key.split(".", 3)
        names[f"extra.{key}"] = f"backbone.extra.{k}.{j}.{layer[part]}.{param}"
    for ours, theirs in (("classification", "classification_head"), ("regression", "regression_head")):
        for key in getattr(model, ours).state_dict():
            k, j, rest = key.split(".", 2)
            if j == "0":  # the depthwise ConvBNAct
                part, param = rest.split(".", 1)
                rest = f"{layer[part]}.{param}"
            names[f"{ours}.{key}"] = f"head.{theirs}.module_list.{k}.{j}.{rest}"
    return names
