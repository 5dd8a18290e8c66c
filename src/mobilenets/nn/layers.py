"""Building layers shared by every MobileNet: channel rounding, activations, conv-BN-act, squeeze-excite.

Papers: V1 https://arxiv.org/abs/1704.04861, V2 https://arxiv.org/abs/1801.04381,
V3 https://arxiv.org/abs/1905.02244 (Section 5.2 for h-swish, Section 5.3 for squeeze-and-excite).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("symmetric", "same")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more than 10%.

    This is ``_make_divisible`` of the released TF-Slim / Keras MobileNets (and timm's ``make_divisible``),
    so widths below 1.0 reproduce the released checkpoints and the papers' parameter counts.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # never round down by more than 10%
        rounded += divisor
    return rounded


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """h-sigmoid(x) = ReLU6(x + 3) / 6, the piecewise-linear sigmoid of V3 Section 5.2."""
    return F.hardsigmoid(x)


def hard_swish(x: torch.Tensor) -> torch.Tensor:
    """h-swish(x) = x * ReLU6(x + 3) / 6 (V3 Section 5.2, equation 2)."""
    return F.hardswish(x)


# Activations by the names the papers' tables use (NL column of V3 Tables 1-2: RE, HS).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hard_swish": lambda: nn.Hardswish(inplace=True),
    "hard_sigmoid": lambda: nn.Hardsigmoid(inplace=True),
}
ACTIVATION_ALIASES = {"RE": "relu", "HS": "hard_swish"}


def make_activation(name: str | None) -> nn.Module | None:
    """An activation module by name; ``None`` means linear (no activation)."""
    if name is None:
        return None
    key = ACTIVATION_ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        allowed = ", ".join([*ACTIVATIONS, *ACTIVATION_ALIASES])
        raise ValueError(f"unknown activation {name!r}; allowed: {allowed}")
    return ACTIVATIONS[key]()


def same_padding(size: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one spatial axis: (before, after), the extra pixel goes after."""
    effective_kernel = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


class SamePad2d(nn.Module):
    """Pads like TensorFlow's 'SAME' on a strided conv: asymmetric (0, 1) for k3/s2 on even inputs.

    Needed to reproduce TF/Keras-trained weights exactly (anchors 3.3); symmetric padding shifts the
    sampling grid by one pixel on every stride-2 layer.
    """

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int(): an exported graph has fixed height and width, so the pads become constants of one Pad op
        # instead of a chain of shape arithmetic every runtime would have to support.
        height, width = int(x.shape[-2]), int(x.shape[-1])
        top, bottom = same_padding(height, self.kernel_size, self.stride, self.dilation)
        left, right = same_padding(width, self.kernel_size, self.stride, self.dilation)
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> activation; ``act=None`` is the linear layer of V2's bottleneck (Section 3.2).

    Children are named ``pad`` (only for TF 'same' padding on strided convs), ``conv``, ``bn``, ``act``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: str | None = "relu",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # TF 'SAME' equals symmetric padding unless the conv is strided, so only strided convs need a pad layer.
        if padding == "same" and stride > 1:
            layers["pad"] = SamePad2d(kernel_size, stride, dilation)
            conv_padding = 0
        else:
            conv_padding = (kernel_size - 1) // 2 * dilation
        layers["conv"] = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, conv_padding, dilation, groups, bias=False
        )
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        activation = make_activation(act)
        if activation is not None:
            layers["act"] = activation
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as placed in MobileNetV3 (Section 5.3, Figure 4).

    s = h-sigmoid(W_expand · ReLU(W_reduce · avgpool(x))), output x · s. The reduced width is
    ``make_divisible(channels / 4, 8)``: V3 fixes the bottleneck to "1/4 of the number of channels in
    expansion layer" (Section 5.3), and the released models round it to a multiple of 8.
    """

    def __init__(self, channels: int, reduced_channels: int | None = None, gate: str = "hard_sigmoid"):
        super().__init__()
        reduced_channels = reduced_channels or make_divisible(channels / 4, 8)
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.gate = make_activation(gate)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel scales s, shape (N, C, 1, 1)."""
        squeezed = x.mean((2, 3), keepdim=True)
        return self.gate(self.conv_expand(self.act(self.conv_reduce(squeezed))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)
