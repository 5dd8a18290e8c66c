"""The two MobileNet blocks: depthwise separable convolution (V1) and the inverted residual (V2, V3).

V1 Section 3.1 and Figure 3; V2 Section 3.3, Figure 3b and Table 1; V3 Section 5 and Figure 4.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNAct, SqueezeExcite


class DepthwiseSeparable(nn.Module):
    """A 3x3 depthwise conv (one filter per input channel) then a 1x1 pointwise conv that combines them.

    V1 Figure 3: dw 3x3 -> BN -> ReLU -> 1x1 -> BN -> ReLU. The cost is D_K² M D_F² + M N D_F² against
    D_K² M N D_F² for a full convolution, a ratio of 1/N + 1/D_K² (V1 equation 5).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        dilation: int = 1,
        act: str = "relu6",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        norm = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.depthwise = ConvBNAct(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            groups=in_channels,
            dilation=dilation,
            act=act,
            **norm,
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=act, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck: expand 1x1 -> depthwise -> [SE] -> linear project 1x1.

    V2 Table 1: the expansion (t x input channels) carries the non-linearity; the projection back to the
    narrow bottleneck is linear, because ReLU on a low-dimensional manifold destroys information
    (V2 Section 3.2). The shortcut joins the bottlenecks when the stride is 1 and in == out.
    V3 adds squeeze-excite after the depthwise conv, a per-block activation (ReLU or h-swish) and 5x5
    kernels (V3 Figure 4, Tables 1-2). The expand layer is omitted when the expansion width equals the
    input width (V2's first block, t = 1; V3's first Large / Small blocks).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_channels: int | None = None,
        act: str = "relu6",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        norm = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (
            ConvBNAct(in_channels, expanded_channels, 1, act=act, **norm)
            if expanded_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvBNAct(
            expanded_channels,
            expanded_channels,
            kernel_size,
            stride,
            groups=expanded_channels,
            dilation=dilation,
            act=act,
            **norm,
        )
        self.se = SqueezeExcite(expanded_channels, se_channels) if se_channels else nn.Identity()
        self.project = ConvBNAct(expanded_channels, out_channels, 1, act=None, **norm)

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block output and the expansion layer's output (the C4 tap SSDLite uses, V3 Section 6.3)."""
        expanded = self.expand(x)
        out = self.project(self.se(self.depthwise(expanded)))
        return (x + out if self.use_residual else out), expanded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out
