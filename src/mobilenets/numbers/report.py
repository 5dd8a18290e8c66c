"""Text tables of the numbers: the talk's comparison, the zoo, per-layer costs.

Plain fixed-width text, so the output reads the same in a terminal, a log and a test.
"""

from __future__ import annotations

import importlib

from torch import nn

from ..nn.detection import is_detection_name
from ..nn.registry import VARIANTS, build_detection_model, build_model, build_segmentation_model, get_variant
from ..nn.segmentation import is_segmentation_name
from .comparison import REFERENCE_NETS
from .profile import Profile
from .published import PUBLISHED, check_all, check_cell, profile_named

TALK_MODELS = (("1.0 MobileNet-224", "mobilenet_v1_100"), ("GoogleNet", "googlenet"), ("VGG 16", "vgg16"))


def format_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Columns padded to their widest cell; ``align`` is one 'l' or 'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def resolve_module(
    spec: str, num_classes: int | None = None, reduced_tail: bool = False
) -> tuple[str, nn.Module]:
    """A registered name, a reference net ("googlenet", "vgg16"), or "package.module:factory".
    ``num_classes`` defaults to 1000 (21 for segmentation); ``reduced_tail`` is V3's RF2 option."""
    if reduced_tail and (spec in REFERENCE_NETS or ":" in spec):
        raise ValueError(f"--reduced-tail is an option of the MobileNets, not of {spec}")
    if spec in REFERENCE_NETS:
        return spec, REFERENCE_NETS[spec](num_classes=num_classes or 1000)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot load {spec!r}: {error}") from error
        return spec, factory()
    if is_segmentation_name(spec):  # LR-ASPP / DeepLabv3 at their usual 21 classes (VOC)
        return spec, build_segmentation_model(spec, num_classes=num_classes or 21, reduced_tail=reduced_tail)
    if is_detection_name(spec):  # SSDLite at COCO's 91 classes
        return spec, build_detection_model(spec, num_classes=num_classes or 91, reduced_tail=reduced_tail)
    get_variant(spec)  # raises with the allowed names
    return spec, build_model(spec, num_classes=num_classes or 1000, reduced_tail=reduced_tail)


def talk_table() -> str:
    """V1 Table 8, computed next to published: MobileNet-224 against GoogLeNet and VGG-16."""
    rows, notes = [], []
    for label, model in TALK_MODELS:
        cell = next(c for c in PUBLISHED if c.source == "V1 Table 8" and c.model == model)
        checks = {check.field: check for check in check_cell(cell)}
        profile = profile_named(model)
        rows.append(
            [
                label,
                f"{cell.top1:.1f}%",
                f"{profile.madds / 1e6:,.1f}",
                cell.madds,
                f"{profile.params:,}",
                f"{cell.params}M",
            ]
        )
        notes += [f"  {label} {field}: {check.reason}" for field, check in checks.items() if check.reason]
    table = format_table(["V1 Table 8", "ImageNet top-1", "MAdds (M)", "paper", "Params", "paper"], rows)
    convention = (
        "MAdds: conv + linear multiply-adds at 224x224, per image. Params: all trainable tensors, BatchNorm "
        "included (torchvision's count);\nthe papers leave BN out (MobileNet-224: 4,210,088). Top-1 as published."
    )
    return "\n".join(
        [table, "", convention, *(["Where published and computed differ:", *notes] if notes else [])]
    )


def zoo_table(resolution: int = 224) -> str:
    """Every registered variant: width, params, MAdds, published top-1."""
    rows = []
    for name, variant in VARIANTS.items():
        if resolution == 224:
            params, madds = variant.params, variant.madds
        else:
            profile = profile_named(name, resolution)
            params, madds = profile.params, profile.madds
        rows.append(
            [
                name,
                f"{variant.width:g}",
                f"{params:,}",
                f"{madds / 1e6:.1f}",
                f"{variant.top1:.1f}",
                variant.top1_source,
            ]
        )
    return format_table(
        ["model", "width", "params", f"MAdds (M) @{resolution}", "top-1 (pub.)", "source"], rows, "lrrrrl"
    )


def profiles_table(profiles: list[Profile]) -> str:
    rows = [
        [
            p.name,
            "x".join(map(str, p.resolution)) if isinstance(p.resolution, tuple) else str(p.resolution),
            f"{p.params:,}",
            f"{p.madds / 1e6:,.1f}",
        ]
        for p in profiles
    ]
    return format_table(["model", "resolution", "params", "MAdds (M)"], rows)


def per_layer_table(profile: Profile) -> str:
    """Each Conv2d / Linear, then each depthwise separable pair's cost against a full conv (V1 eq. 5)."""
    rows = [
        [
            layer.name,
            layer.kind,
            "x".join(map(str, layer.out_shape)),
            f"{layer.params:,}",
            f"{layer.madds / 1e6:.2f}",
        ]
        for layer in profile.layers
    ]
    layers = format_table(["layer", "kind", "output", "params", "MAdds (M)"], rows, "llrrr")
    pairs = [
        [
            f"{pair.depthwise} + {pair.pointwise}",
            f"{pair.kernel_size}x{pair.kernel_size}",
            str(pair.out_channels),
            f"{pair.ratio:.4f}",
            f"{pair.predicted_ratio:.4f}",
        ]
        for pair in profile.separable
    ]
    separable = format_table(
        ["depthwise separable layer", "D_K", "N", "cost / full conv", "1/N + 1/D_K^2"], pairs, "lrrrr"
    )
    header = (
        f"{profile.name} @ {profile.resolution}: {profile.params:,} params, {profile.madds / 1e6:,.1f}M MAdds"
    )
    return "\n\n".join([header, layers, separable])


def published_table() -> str:
    """Every published cell beside the computed value; disagreeing cells carry their erratum."""
    rows, notes = [], []
    for check in check_all():
        cell = check.cell
        status = "agrees" if check.agrees else f"erratum {len(notes) + 1}"
        if not check.agrees:
            notes.append(
                f"  {len(notes) + 1}. {cell.source}, {cell.model} @{cell.resolution} {check.field}: {check.reason}"
            )
        rows.append(
            [
                cell.source,
                cell.model,
                str(cell.resolution),
                check.field,
                check.printed,
                f"{check.computed:,.2f}",
                status,
            ]
        )
    table = format_table(
        ["source", "model", "res", "field", "printed (M)", "computed (M)", "status"], rows, "llrlrrl"
    )
    agreeing = sum(row[-1] == "agrees" for row in rows)
    summary = f"{agreeing} of {len(rows)} printed cells agree; {len(notes)} are errata in their source:"
    return "\n".join([table, "", summary, *notes])
