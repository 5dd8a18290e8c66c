"""Block unit tests: activations against their formulas, SE width, residual rule, padding, rounding."""

import pytest
import torch
from torch import nn

from mobilenets import ConvBNAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite, make_divisible
from mobilenets.nn.layers import SamePad2d, hard_sigmoid, hard_swish, make_activation, same_padding


def test_hard_sigmoid_and_swish_match_the_paper_formulas():
    x = torch.linspace(-6, 6, 1201)
    relu6 = torch.clamp(x + 3, 0, 6)
    torch.testing.assert_close(hard_sigmoid(x), relu6 / 6)
    torch.testing.assert_close(hard_swish(x), x * relu6 / 6)
    assert hard_sigmoid(torch.tensor(0.0)) == 0.5
    assert hard_swish(torch.tensor(-3.0)) == 0 and hard_swish(torch.tensor(3.0)) == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (16 * 0.75, 16),
        (24 * 0.75, 24),
        (72 / 4, 24),
        (120 / 4, 32),
        (960 / 4, 240),
        (11.2, 16),
        (33.6, 32),
        (3, 8),
    ],
)
def test_make_divisible_rounds_like_the_released_checkpoints(value, expected):
    assert make_divisible(value) == expected


def test_make_divisible_never_drops_more_than_ten_percent():
    for value in range(8, 2000):
        assert make_divisible(value) >= 0.9 * value and make_divisible(value) % 8 == 0


@pytest.mark.parametrize(
    ("channels", "reduced"),
    [(72, 24), (120, 32), (480, 120), (672, 168), (960, 240), (16, 8), (96, 24), (576, 144)],
)
def test_squeeze_excite_reduces_to_a_quarter_rounded_to_8(channels, reduced):
    se = SqueezeExcite(channels)
    assert se.conv_reduce.out_channels == reduced and se.conv_expand.out_channels == channels
    assert isinstance(se.gate, nn.Hardsigmoid) and isinstance(se.act, nn.ReLU)


def test_squeeze_excite_scales_channels_by_its_gates():
    se = SqueezeExcite(16)
    x = torch.randn(2, 16, 5, 5)
    gates = se.gates(x)
    assert gates.shape == (2, 16, 1, 1) and bool(((gates >= 0) & (gates <= 1)).all())
    torch.testing.assert_close(se(x), x * gates)


def test_conv_bn_act_without_activation_is_linear():
    layer = ConvBNAct(4, 8, 1, act=None).eval()
    assert list(dict(layer.named_children())) == ["conv", "bn"]
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(layer(2 * x) - layer(x), layer(x) - layer(0 * x), atol=1e-5, rtol=1e-5)


def test_unknown_activation_and_padding_name_what_is_allowed():
    with pytest.raises(ValueError, match="allowed: relu, relu6, hard_swish, hard_sigmoid, RE, HS"):
        make_activation("gelu")
    with pytest.raises(ValueError, match=r"padding must be one of \('symmetric', 'same'\)"):
        ConvBNAct(3, 8, 3, 2, padding="valid")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(224, 3, 2, (0, 1)), (225, 3, 2, (1, 1)), (224, 5, 2, (1, 2)), (7, 3, 1, (1, 1))],
)
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride, 1) == expected


def test_same_padding_conv_matches_explicit_asymmetric_pad():
    layer = ConvBNAct(3, 8, 3, 2, padding="same", act=None).eval()
    assert isinstance(layer.pad, SamePad2d) and layer.conv.padding == (0, 0)
    x = torch.randn(1, 3, 8, 8)
    reference = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), layer.conv.weight, stride=2)
    torch.testing.assert_close(layer.conv(layer.pad(x)), reference)


def test_depthwise_separable_is_depthwise_then_pointwise():
    block = DepthwiseSeparable(32, 64, stride=2)
    assert block.depthwise.conv.groups == 32 and block.depthwise.conv.kernel_size == (3, 3)
    assert block.pointwise.conv.kernel_size == (1, 1) and block.pointwise.conv.out_channels == 64
    assert isinstance(block.depthwise.act, nn.ReLU6) and isinstance(block.pointwise.act, nn.ReLU6)
    assert block(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize(
    ("cin", "cout", "stride", "residual"), [(16, 16, 1, True), (16, 24, 1, False), (16, 16, 2, False)]
)
def test_inverted_residual_shortcut_only_for_stride_1_and_equal_widths(cin, cout, stride, residual):
    block = InvertedResidual(cin, cin * 6, cout, stride=stride).eval()
    assert block.use_residual is residual
    x = torch.randn(1, cin, 8, 8)
    body = block.project(block.se(block.depthwise(block.expand(x))))
    torch.testing.assert_close(block(x), x + body if residual else body)


def test_inverted_residual_projection_is_linear_and_expansion_optional():
    block = InvertedResidual(16, 16, 16, kernel_size=5, se_channels=8, act="hard_swish")
    assert isinstance(block.expand, nn.Identity)  # exp == in: no expand layer (V3's first block)
    assert not hasattr(block.project, "act")
    assert block.depthwise.conv.kernel_size == (5, 5) and isinstance(block.depthwise.act, nn.Hardswish)
    assert isinstance(block.se, SqueezeExcite) and block.se.conv_reduce.out_channels == 8
