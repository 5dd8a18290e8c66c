"""The papers' architecture tables, one constant per table, rows as printed.

Lay this file beside the PDFs: each table lists its rows in the paper's column order with the paper's
numbers (absolute expansion sizes, the classifier's ``k``), and the trailing comment gives the paper's
Input column. Stem and head rows are part of the tables, as in the papers. No width multiplier, rounding
or derived column lives here: :mod:`mobilenets.scaling` turns (table, width) into a concrete plan.

Where a printed cell is wrong, the table keeps the printed value and :data:`ERRATA` records the value the
released models use and why; :func:`corrected` applies them.

- V1: Howard et al. 2017, "MobileNets", https://arxiv.org/abs/1704.04861, Table 1.
- V2: Sandler et al. 2018, "MobileNetV2", https://arxiv.org/abs/1801.04381, Table 2.
- V3: Howard et al. 2019, "Searching for MobileNetV3", https://arxiv.org/abs/1905.02244 (final version,
  arXiv v5 / ICCV 2019), Tables 1 and 2. The first arXiv version differs: see :data:`ERRATA` and
  docs/numbers.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

K = "k"  # the number of classes, as the tables print it


@dataclass(frozen=True)
class V1Row:
    """A row of V1 Table 1. ``n`` is the paper's "5x" repeat of a dw / pw pair."""

    type: str  # "Conv", "Conv dw", "Avg Pool", "FC", "Softmax"
    stride: int | None
    filter_shape: tuple[int, ...] | None  # (kh, kw, in, out) for Conv; (kh, kw, channels) for Conv dw
    n: int = 1


@dataclass(frozen=True)
class V2Row:
    """A row of V2 Table 2: t = expansion factor, c = output channels, n = repeats, s = first stride."""

    operator: str
    t: int | None
    c: int | str | None
    n: int | None
    s: int | None


@dataclass(frozen=True)
class V3Row:
    """A row of V3 Tables 1-2: #exp = expansion width, #out = output channels, SE, NL (RE/HS), s."""

    operator: str
    exp: int | None
    out: int | str | None
    se: bool
    nl: str | None
    s: int


# MobileNetV1, Table 1 "MobileNet Body Architecture". Every conv is followed by BN and ReLU.
# Type / Stride, Filter Shape
V1_TABLE_1 = (
    V1Row("Conv", 2, (3, 3, 3, 32)),  # 224 x 224 x 3
    V1Row("Conv dw", 1, (3, 3, 32)),  # 112 x 112 x 32
    V1Row("Conv", 1, (1, 1, 32, 64)),  # 112 x 112 x 32
    V1Row("Conv dw", 2, (3, 3, 64)),  # 112 x 112 x 64
    V1Row("Conv", 1, (1, 1, 64, 128)),  # 56 x 56 x 64
    V1Row("Conv dw", 1, (3, 3, 128)),  # 56 x 56 x 128
    V1Row("Conv", 1, (1, 1, 128, 128)),  # 56 x 56 x 128
    V1Row("Conv dw", 2, (3, 3, 128)),  # 56 x 56 x 128
    V1Row("Conv", 1, (1, 1, 128, 256)),  # 28 x 28 x 128
    V1Row("Conv dw", 1, (3, 3, 256)),  # 28 x 28 x 256
    V1Row("Conv", 1, (1, 1, 256, 256)),  # 28 x 28 x 256
    V1Row("Conv dw", 2, (3, 3, 256)),  # 28 x 28 x 256
    V1Row("Conv", 1, (1, 1, 256, 512)),  # 14 x 14 x 256
    V1Row("Conv dw", 1, (3, 3, 512), n=5),  # 14 x 14 x 512
    V1Row("Conv", 1, (1, 1, 512, 512), n=5),  # 14 x 14 x 512
    V1Row("Conv dw", 2, (3, 3, 512)),  # 14 x 14 x 512
    V1Row("Conv", 1, (1, 1, 512, 1024)),  # 7 x 7 x 512
    V1Row("Conv dw", 2, (3, 3, 1024)),  # 7 x 7 x 1024   (printed s2: see ERRATA)
    V1Row("Conv", 1, (1, 1, 1024, 1024)),  # 7 x 7 x 1024
    V1Row("Avg Pool", 1, (7, 7)),  # 7 x 7 x 1024
    V1Row("FC", 1, (1024, 1000)),  # 1 x 1 x 1024
    V1Row("Softmax", 1, None),  # 1 x 1 x 1000
)

# MobileNetV2, Table 2. Spatial convolutions are 3x3 (Section 4); ReLU6 after expand and depthwise.
# Operator, t, c, n, s
V2_TABLE_2 = (
    V2Row("conv2d", None, 32, 1, 2),  # 224^2 x 3
    V2Row("bottleneck", 1, 16, 1, 1),  # 112^2 x 32
    V2Row("bottleneck", 6, 24, 2, 2),  # 112^2 x 16
    V2Row("bottleneck", 6, 32, 3, 2),  # 56^2 x 24
    V2Row("bottleneck", 6, 64, 4, 2),  # 28^2 x 32
    V2Row("bottleneck", 6, 96, 3, 1),  # 14^2 x 64
    V2Row("bottleneck", 6, 160, 3, 2),  # 14^2 x 96
    V2Row("bottleneck", 6, 320, 1, 1),  # 7^2 x 160
    V2Row("conv2d 1x1", None, 1280, 1, 1),  # 7^2 x 320
    V2Row("avgpool 7x7", None, None, 1, None),  # 7^2 x 1280
    V2Row("conv2d 1x1", None, K, None, None),  # 1 x 1 x 1280
)

# MobileNetV3-Large, Table 1 (final version). NBN = no batch norm.
# Operator, exp size, #out, SE, NL, s
V3_LARGE_TABLE_1 = (
    V3Row("conv2d", None, 16, False, "HS", 2),  # 224^2 x 3
    V3Row("bneck, 3x3", 16, 16, False, "RE", 1),  # 112^2 x 16
    V3Row("bneck, 3x3", 64, 24, False, "RE", 2),  # 112^2 x 16
    V3Row("bneck, 3x3", 72, 24, False, "RE", 1),  # 56^2 x 24
    V3Row("bneck, 5x5", 72, 40, True, "RE", 2),  # 56^2 x 24
    V3Row("bneck, 5x5", 120, 40, True, "RE", 1),  # 28^2 x 40
    V3Row("bneck, 5x5", 120, 40, True, "RE", 1),  # 28^2 x 40
    V3Row("bneck, 3x3", 240, 80, False, "HS", 2),  # 28^2 x 40
    V3Row("bneck, 3x3", 200, 80, False, "HS", 1),  # 14^2 x 80
    V3Row("bneck, 3x3", 184, 80, False, "HS", 1),  # 14^2 x 80
    V3Row("bneck, 3x3", 184, 80, False, "HS", 1),  # 14^2 x 80
    V3Row("bneck, 3x3", 480, 112, True, "HS", 1),  # 14^2 x 80
    V3Row("bneck, 3x3", 672, 112, True, "HS", 1),  # 14^2 x 112
    V3Row("bneck, 5x5", 672, 160, True, "HS", 2),  # 14^2 x 112
    V3Row("bneck, 5x5", 960, 160, True, "HS", 1),  # 7^2 x 160
    V3Row("bneck, 5x5", 960, 160, True, "HS", 1),  # 7^2 x 160
    V3Row("conv2d, 1x1", None, 960, False, "HS", 1),  # 7^2 x 160
    V3Row("pool, 7x7", None, None, False, None, 1),  # 7^2 x 960
    V3Row("conv2d 1x1, NBN", None, 1280, False, "HS", 1),  # 1^2 x 960
    V3Row("conv2d 1x1, NBN", None, K, False, None, 1),  # 1^2 x 1280
)

# MobileNetV3-Small, Table 2 (final version).
# Operator, exp size, #out, SE, NL, s
V3_SMALL_TABLE_2 = (
    V3Row("conv2d, 3x3", None, 16, False, "HS", 2),  # 224^2 x 3
    V3Row("bneck, 3x3", 16, 16, True, "RE", 2),  # 112^2 x 16
    V3Row("bneck, 3x3", 72, 24, False, "RE", 2),  # 56^2 x 16
    V3Row("bneck, 3x3", 88, 24, False, "RE", 1),  # 28^2 x 24
    V3Row("bneck, 5x5", 96, 40, True, "HS", 2),  # 28^2 x 24
    V3Row("bneck, 5x5", 240, 40, True, "HS", 1),  # 14^2 x 40
    V3Row("bneck, 5x5", 240, 40, True, "HS", 1),  # 14^2 x 40
    V3Row("bneck, 5x5", 120, 48, True, "HS", 1),  # 14^2 x 40
    V3Row("bneck, 5x5", 144, 48, True, "HS", 1),  # 14^2 x 48
    V3Row("bneck, 5x5", 288, 96, True, "HS", 2),  # 14^2 x 48
    V3Row("bneck, 5x5", 576, 96, True, "HS", 1),  # 7^2 x 96
    V3Row("bneck, 5x5", 576, 96, True, "HS", 1),  # 7^2 x 96
    V3Row("conv2d, 1x1", None, 576, True, "HS", 1),  # 7^2 x 96   (printed SE: see ERRATA)
    V3Row("pool, 7x7", None, None, False, None, 1),  # 7^2 x 576
    V3Row("conv2d 1x1, NBN", None, 1024, False, "HS", 1),  # 1^2 x 576
    V3Row("conv2d 1x1, NBN", None, K, False, None, 1),  # 1^2 x 1024
)

TABLES = {
    "V1_TABLE_1": V1_TABLE_1,
    "V2_TABLE_2": V2_TABLE_2,
    "V3_LARGE_TABLE_1": V3_LARGE_TABLE_1,
    "V3_SMALL_TABLE_2": V3_SMALL_TABLE_2,
}


@dataclass(frozen=True)
class Erratum:
    """A printed cell that no released model follows: where it is, what is printed, what is used, why."""

    table: str
    row: int  # 0-based index into the table constant
    field: str
    printed: object
    used: object
    reason: str


ERRATA = (
    Erratum(
        "V1_TABLE_1",
        17,
        "stride",
        2,
        1,
        "printed 'Conv dw / s2' with a 7x7 input and a 7x7 output; a stride of 2 would halve it. "
        "TF-Slim (_CONV_DEFS), Keras and timm all use stride 1 here.",
    ),
    Erratum(
        "V3_SMALL_TABLE_2",
        12,
        "se",
        True,
        False,
        "Table 2 prints SE on the final 1x1 conv (576); no released model has it (TF-Slim V3_SMALL, "
        "Keras, torchvision and timm do not), and the paper's own 2.5M params / 56M MAdds exclude it.",
    ),
)


def corrected(name: str) -> tuple:
    """The table ``name`` with :data:`ERRATA` applied: the network the released checkpoints implement."""
    rows = list(TABLES[name])
    for erratum in ERRATA:
        if erratum.table == name:
            row = rows[erratum.row]
            if getattr(row, erratum.field) != erratum.printed:
                raise AssertionError(f"{name} row {erratum.row}: erratum no longer matches the printed table")
            rows[erratum.row] = dataclasses.replace(row, **{erratum.field: erratum.used})
    return tuple(rows)


# Known differences between versions of the sources, for the record (docs/numbers.md has the numbers).
VERSION_NOTES = (
    "V3 arXiv v1 (May 2019) printed Table 1 with the 672->160 rows at strides 1 then 2 and one 960 row; "
    "the final version (used here) has 672->160 at stride 2 followed by two 960 rows.",
    "V3 arXiv v1 Table 3 and the TF-Slim README / Keras docstring give V3-Small 1.0 as 66M MAdds / 2.9M "
    "params; the released checkpoint and the final paper (Table 3: 56M / 2.5M) agree on 56.5M / 2.54M.",
    "V3 minimalistic variants (3x3 kernels, ReLU, no SE) appear only in the TF-Slim README and code.",
)
