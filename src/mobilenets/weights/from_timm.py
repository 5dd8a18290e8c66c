"""timm's MobileNet names for our slots (EfficientNet-style ``blocks.{stage}.{j}``, anchors section 3.1)."""

from __future__ import annotations

import re

from torch import nn

from .checkpoint import CheckpointError
from .preprocessing import Preprocessing
from .slots import TF_OPTIONS, TIMM_OPTIONS, TIMM_PREPROCESSING, SourceArch, has_expand, layer_slots

ARCHS = {
    "mobilenetv1_100": SourceArch(
        "mobilenet_v1_100", TIMM_OPTIONS, Preprocessing.inception(interpolation="bicubic")
    ),
    **{
        f"mobilenetv2_{w}": SourceArch(f"mobilenet_v2_{w}", TIMM_OPTIONS, TIMM_PREPROCESSING)
        for w in ("035", "050", "075", "100", "140")
    },
    **{
        f"mobilenetv3_{s}_{w}": SourceArch(f"mobilenet_v3_{s}_{w}", TIMM_OPTIONS, TIMM_PREPROCESSING)
        for s, w in (("large", "075"), ("large", "100"), ("small", "075"), ("small", "100"))
    },
    **{
        f"tf_mobilenetv3_{s}_{w}": SourceArch(f"mobilenet_v3_{s}_{w}", TF_OPTIONS, Preprocessing.inception())
        for s in ("large", "small")
        for w in ("075", "100", "minimal_100")
    },
}

# timm's mobilenetv3_small_050 / large_050 keep a 16-channel stem below width 0.75 ("fix_stem"); ours
# scales it as TF-Slim does (8), so those checkpoints have no registry twin.
NO_TWIN = {
    "mobilenetv3_small_050": "mobilenet_v3_small_050",
    "mobilenetv3_large_050": "mobilenet_v3_large_050",
}


def timm_names(model: nn.Module, source_keys: list[str]) -> list[str]:
    """timm EfficientNet / MobileNetV3 module paths; block prefixes ("blocks.s.j") are read from the source."""
    prefixes = sorted(
        {m.group(1) for k in source_keys if (m := re.match(r"(blocks\.\d+\.\d+)\.", k))},
        key=lambda p: tuple(int(n) for n in p.split(".")[1:]),
    )
    v3_last_in_blocks = any(k.startswith(f"{prefixes[-1]}.conv.") for k in source_keys) if prefixes else False
    block_prefixes = prefixes[:-1] if v3_last_in_blocks else prefixes
    if len(block_prefixes) != len(model.blocks):
        raise CheckpointError(
            f"the timm weights have {len(block_prefixes)} blocks, {model.arch} has {len(model.blocks)}: wrong --arch?"
        )
    names = []
    for slot in layer_slots(model):
        if slot.part == "stem":
            names.append("conv_stem" if slot.role == "conv" else "bn1")
        elif slot.part == "last":
            if v3_last_in_blocks:
                names.append(f"{prefixes[-1]}.{'conv' if slot.role == 'conv' else 'bn1'}")
            else:
                names.append("conv_head" if slot.role == "conv" else "bn2")
        elif slot.part in ("head", "classifier"):
            names.append("conv_head" if slot.part == "head" else "classifier")
        else:
            prefix = block_prefixes[slot.block]
            separable = not has_expand(model, slot.block)  # timm's DepthwiseSeparableConv
            table = (
                {
                    "depthwise": ("conv_dw", "bn1"),
                    "project": ("conv_pw", "bn2"),
                    "pointwise": ("conv_pw", "bn2"),
                }
                if separable
                else {
                    "expand": ("conv_pw", "bn1"),
                    "depthwise": ("conv_dw", "bn2"),
                    "project": ("conv_pwl", "bn3"),
                }
            )
            if slot.part == "se_reduce":
                names.append(f"{prefix}.se.conv_reduce")
            elif slot.part == "se_expand":
                names.append(f"{prefix}.se.conv_expand")
            else:
                conv, bn = table[slot.part]
                names.append(f"{prefix}.{conv if slot.role == 'conv' else bn}")
    return names
