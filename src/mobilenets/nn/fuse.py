"""Inference-optimised PyTorch: BatchNorm folded into the convolutions, channels-last, eval mode.

Folding is exact algebra (W' = W * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps)),
done by ``torch.nn.utils.fusion.fuse_conv_bn_eval``; the network then runs one op fewer per layer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import ConvBNAct


def fuse(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` for inference: every conv-BN pair folded into one conv, eval mode, channels-last.

    The original is untouched. The copy gives the same outputs (to float rounding) and cannot be trained.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and isinstance(getattr(module, "bn", None), nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    # Both ways: exporters such as ExecuTorch's XNNPACK passes expect NCHW-contiguous weights.
    fused = fused.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    fused.fused = True
    return fused
