"""Turn a paper table and a width multiplier into a concrete network plan.

Width multiplier alpha (V1 Section 3.3): every layer's channel count is scaled by alpha, then rounded the
way the released TF-Slim / Keras checkpoints round it, because the papers' parameter and MAdds tables
describe those checkpoints:

- V1: ``max(int(c * alpha), 8)`` (TF-Slim ``depth`` with ``min_depth=8``).
- V2, V3: ``make_divisible(c * alpha, 8)``; the expansion is ``rounded_input * ratio`` (V2: t; V3: the
  table's exp / input), rounded again, not ``exp * alpha`` as torchvision does (anchors 3.3).
- The heads (V2's 1280, V3's 1280 / 1024) are scaled only when alpha > 1 (V2 Section 6.1: "we apply
  width multiplier to all layers except the very last convolutional layer"; TF-Slim's
  ``finegrain_classification_mode`` and Keras keep them below 1.0 and Keras scales them above).
- The V3 stem is scaled like every other layer, ``make_divisible(16 * alpha)`` (TF-Slim). Keras keeps 16,
  which is the same at the released widths 0.75 and 1.0; V3 Table 9's 0.35 / 0.5 / 1.25 MAdds need the
  scaled stem (69M at Large 0.5, 356M at Large 1.25).

The resolution multiplier rho (V1 Section 3.4) needs no plan: every network here accepts any input size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .layers import make_divisible
from .specs import K, corrected


@dataclass(frozen=True)
class ConvPlan:
    """A plain conv-BN-act layer (stem, or the last 1x1 conv before pooling)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    act: str


@dataclass(frozen=True)
class BlockPlan:
    """One block: ``depthwise_separable`` (V1) or ``inverted_residual`` (V2 / V3)."""

    kind: str
    in_channels: int
    expanded_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    act: str
    se_channels: int | None = None  # squeeze-excite reduced width, None for no SE
    dilation: int = 1


@dataclass(frozen=True)
class NetworkPlan:
    """stem -> blocks -> last_conv -> global pool -> head (1x1 conv without BN, i.e. a Linear) -> classifier."""

    stem: ConvPlan
    blocks: tuple[BlockPlan, ...]
    last_conv: ConvPlan | None
    head_channels: int | None  # V3's NBN 1x1 conv after pooling (1280 / 1024); None for V1 / V2
    head_act: str | None
    classifier_in: int  # width of the features the classifier sees

    @property
    def features_channels(self) -> int:
        """Channels of the last feature map, before global pooling."""
        return self.last_conv.out_channels if self.last_conv else self.blocks[-1].out_channels


def _kernel(operator: str) -> int:
    match = re.search(r"(\d+)x\1", operator)
    return int(match.group(1)) if match else 3


def _check_width(width: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")


def plan_v1(width: float = 1.0) -> NetworkPlan:
    """V1 Table 1 at width multiplier alpha = ``width``."""
    _check_width(width)

    def depth(channels: int) -> int:
        return max(int(channels * width), 8)

    rows = corrected("V1_TABLE_1")
    stem_row = rows[0]
    stem = ConvPlan(3, depth(stem_row.filter_shape[3]), stem_row.filter_shape[0], stem_row.stride, "relu6")
    blocks: list[BlockPlan] = []
    in_ch = stem.out_channels
    for dw, pw in zip(rows[1:-3:2], rows[2:-3:2], strict=True):
        assert dw.type == "Conv dw" and pw.type == "Conv" and dw.n == pw.n
        for _ in range(dw.n):
            out = depth(pw.filter_shape[3])
            blocks.append(
                BlockPlan("depthwise_separable", in_ch, in_ch, out, dw.filter_shape[0], dw.stride, "relu6")
            )
            in_ch = out
    return NetworkPlan(stem, tuple(blocks), None, None, None, in_ch)


def plan_v2(width: float = 1.0) -> NetworkPlan:
    """V2 Table 2 at width multiplier alpha = ``width``."""
    _check_width(width)
    rows = corrected("V2_TABLE_2")
    stem_row, *body, last_row, _pool, _classifier = rows
    stem = ConvPlan(3, make_divisible(stem_row.c * width), 3, stem_row.s, "relu6")
    blocks: list[BlockPlan] = []
    in_ch = stem.out_channels
    for row in body:
        out = make_divisible(row.c * width)
        for i in range(row.n):
            blocks.append(
                BlockPlan("inverted_residual", in_ch, in_ch * row.t, out, 3, row.s if i == 0 else 1, "relu6")
            )
            in_ch = out
    last = last_row.c if width <= 1.0 else make_divisible(last_row.c * width)
    last_conv = ConvPlan(in_ch, last, 1, 1, "relu6")
    return NetworkPlan(stem, tuple(blocks), last_conv, None, None, last)


def plan_v3(table: str, width: float = 1.0, minimalistic: bool = False) -> NetworkPlan:
    """V3 Table 1 (``V3_LARGE_TABLE_1``) or Table 2 (``V3_SMALL_TABLE_2``) at width ``width``.

    ``minimalistic`` gives the TF-Slim "minimalistic" variants: 3x3 kernels, ReLU, no squeeze-excite
    (friendlier to int8 and accelerators without h-swish).
    """
    _check_width(width)
    rows = corrected(table)
    stem_row, *body, last_row, _pool, head_row, classifier_row = rows
    assert classifier_row.out == K

    def act(nl: str) -> str:
        return "relu" if minimalistic else {"RE": "relu", "HS": "hard_swish"}[nl]

    stem = ConvPlan(3, make_divisible(stem_row.out * width), 3, stem_row.s, act(stem_row.nl))
    blocks: list[BlockPlan] = []
    in_ch, in_table = stem.out_channels, stem_row.out
    for row in body:
        out = make_divisible(row.out * width)
        expanded = make_divisible(in_ch * row.exp / in_table)
        se = make_divisible(expanded / 4) if row.se and not minimalistic else None
        kernel = 3 if minimalistic else _kernel(row.operator)
        blocks.append(BlockPlan("inverted_residual", in_ch, expanded, out, kernel, row.s, act(row.nl), se))
        in_ch, in_table = out, row.out
    last_conv = ConvPlan(in_ch, make_divisible(last_row.out * width), 1, 1, act(last_row.nl))
    head = head_row.out if width <= 1.0 else make_divisible(head_row.out * width)
    return NetworkPlan(stem, tuple(blocks), last_conv, head, act(head_row.nl), head)


def with_reduced_tail(plan: NetworkPlan) -> NetworkPlan:
    """Halve the widths from the last stride-2 block's output on: that block's output, the blocks after
    it (input, expansion, squeeze-excite, output), the last conv and V3's head conv.

    V3 Section 6.3-6.4 ("reduce the channels of the last block by a factor of 2", RF2 in Table 6's
    detection and Table 7's segmentation rows): the last stage was sized for 1000 ImageNet classes, and a
    detector or a 19-class segmenter loses nothing by halving it. torchvision's ``reduced_tail=True``
    gives the same widths at width 1.0 (it halves before applying the width multiplier, which can round
    differently at other widths).
    """
    last_strided = max(i for i, block in enumerate(plan.blocks) if block.stride > 1)

    def half(channels: int) -> int:
        return make_divisible(channels / 2)

    blocks = list(plan.blocks[:last_strided])
    for i, block in enumerate(plan.blocks[last_strided:]):
        if i == 0:
            blocks.append(replace(block, out_channels=half(block.out_channels)))
            continue
        expanded = half(block.expanded_channels)
        blocks.append(
            replace(
                block,
                in_channels=half(block.in_channels),
                expanded_channels=expanded,
                out_channels=half(block.out_channels),
                se_channels=make_divisible(expanded / 4) if block.se_channels else None,
            )
        )
    last_conv = plan.last_conv
    if last_conv is not None:
        last_conv = replace(
            last_conv, in_channels=blocks[-1].out_channels, out_channels=half(last_conv.out_channels)
        )
    head = half(plan.head_channels) if plan.head_channels else None
    features = last_conv.out_channels if last_conv else blocks[-1].out_channels
    return replace(
        plan, blocks=tuple(blocks), last_conv=last_conv, head_channels=head, classifier_in=head or features
    )


OUTPUT_STRIDES = (8, 16, 32)


ATROUS_STYLES = ("slim", "torchvision")


def with_output_stride(plan: NetworkPlan, output_stride: int, atrous_style: str = "slim") -> NetworkPlan:
    """Trade the last stride-2 layers for dilation so the final map is input / ``output_stride``.

    Once the running stride reaches ``output_stride``, a stride-2 block keeps stride 1 and later blocks
    dilate their depthwise conv by the stride they gave up (the atrous trick of DeepLab, used by V2
    Section 6.3 and V3 Section 6.4 for segmentation). ``atrous_style="slim"`` is TF-Slim's and DeepLab's
    rule: the block that gives up its stride keeps the rate before it. ``"torchvision"`` dilates that
    block too, as torchvision's ``dilated=True`` backbones do (their weights expect it).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if atrous_style not in ATROUS_STYLES:
        raise ValueError(f"atrous_style must be one of {ATROUS_STYLES}, got {atrous_style!r}")
    stride, dilation = plan.stem.stride, 1
    blocks = []
    for block in plan.blocks:
        if block.stride > 1 and stride * block.stride > output_stride:
            if atrous_style == "torchvision":
                dilation *= block.stride
                blocks.append(replace(block, stride=1, dilation=dilation))
            else:
                blocks.append(replace(block, stride=1, dilation=dilation))
                dilation *= block.stride
        else:
            blocks.append(replace(block, dilation=dilation))
            stride *= block.stride
    return replace(plan, blocks=tuple(blocks))
