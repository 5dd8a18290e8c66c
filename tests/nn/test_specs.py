"""The paper tables: row counts, strides, errata, and the plans built from them."""

import math

import pytest

from mobilenets.nn.scaling import plan_v1, plan_v2, plan_v3, with_output_stride
from mobilenets.nn.specs import (
    ERRATA,
    TABLES,
    V1_TABLE_1,
    V2_TABLE_2,
    V3_LARGE_TABLE_1,
    V3_SMALL_TABLE_2,
    K,
    corrected,
)


def test_v1_table_1_has_28_layers():
    # V1 Section 3.2: "Counting depthwise and pointwise convolutions as separate layers, MobileNet has 28 layers."
    layers = sum(row.n for row in V1_TABLE_1 if row.type in ("Conv", "Conv dw", "FC"))
    assert layers == 28
    assert len(V1_TABLE_1) == 22  # as printed: 19 conv rows (one with 5x), pool, FC, softmax


def test_v2_table_2_has_17_bottlenecks_and_19_layers():
    assert sum(row.n for row in V2_TABLE_2 if row.operator == "bottleneck") == 17
    assert len(V2_TABLE_2) == 11 and V2_TABLE_2[-1].c == K


@pytest.mark.parametrize(
    ("table", "bnecks", "rows"), [(V3_LARGE_TABLE_1, 15, 20), (V3_SMALL_TABLE_2, 11, 16)]
)
def test_v3_tables_row_counts(table, bnecks, rows):
    assert len(table) == rows
    assert sum(row.operator.startswith("bneck") for row in table) == bnecks
    assert table[-1].out == K and table[-2].operator == "conv2d 1x1, NBN"


@pytest.mark.parametrize(
    "plan", [plan_v1(), plan_v2(), plan_v3("V3_LARGE_TABLE_1"), plan_v3("V3_SMALL_TABLE_2")]
)
def test_product_of_strides_is_32(plan):
    assert plan.stem.stride * math.prod(block.stride for block in plan.blocks) == 32


def test_errata_keep_the_printed_value_and_correct_it():
    assert V1_TABLE_1[17].stride == 2 and corrected("V1_TABLE_1")[17].stride == 1
    assert V3_SMALL_TABLE_2[12].se is True and corrected("V3_SMALL_TABLE_2")[12].se is False
    for erratum in ERRATA:
        assert getattr(TABLES[erratum.table][erratum.row], erratum.field) == erratum.printed
        assert erratum.reason


def test_v3_large_expansion_widths_at_075_follow_tf_not_torchvision():
    # anchors 3.3: TF/Keras/timm round the rounded input times the ratio; torchvision rounds exp * alpha.
    plan = plan_v3("V3_LARGE_TABLE_1", 0.75)
    assert [b.expanded_channels for b in plan.blocks] == [
        16,
        64,
        72,
        72,
        96,
        96,
        192,
        160,
        144,
        144,
        384,
        528,
        528,
        720,
        720,
    ]
    assert plan.head_channels == 1280 and plan.last_conv.out_channels == 720


def test_heads_are_scaled_only_above_width_1():
    assert plan_v2(0.5).last_conv.out_channels == 1280 and plan_v2(1.4).last_conv.out_channels == 1792
    assert plan_v3("V3_SMALL_TABLE_2", 0.5).head_channels == 1024
    assert plan_v3("V3_SMALL_TABLE_2", 1.25).head_channels == 1280


def test_minimalistic_has_3x3_relu_and_no_se():
    plan = plan_v3("V3_LARGE_TABLE_1", minimalistic=True)
    assert {b.kernel_size for b in plan.blocks} == {3}
    assert {b.act for b in plan.blocks} == {"relu"} and plan.head_act == "relu" and plan.stem.act == "relu"
    assert all(b.se_channels is None for b in plan.blocks)


def test_v1_plan_keeps_the_width_rule_of_tf_slim():
    assert [b.out_channels for b in plan_v1(0.25).blocks][:3] == [16, 32, 32]
    assert plan_v1(0.25).stem.out_channels == 8


def test_output_stride_turns_strides_into_dilation():
    plan = with_output_stride(plan_v3("V3_LARGE_TABLE_1"), 16)
    assert plan.stem.stride * math.prod(b.stride for b in plan.blocks) == 16
    assert [b.dilation for b in plan.blocks][-3:] == [1, 2, 2]
    plan8 = with_output_stride(plan_v2(), 8)
    assert plan8.stem.stride * math.prod(b.stride for b in plan8.blocks) == 8
    assert max(b.dilation for b in plan8.blocks) == 4
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        with_output_stride(plan_v2(), 4)


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width must be a positive number, got 0"):
        plan_v2(0)
