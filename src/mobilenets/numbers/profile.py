"""Parameters and multiply-adds, per layer and in total, for any torch.nn.Module.

Counting convention (the papers'; see docs/numbers.md): multiply-adds of every Conv2d and Linear,
``output elements x (input channels / groups) x kernel height x kernel width``, squeeze-excite and the
head included. BatchNorm, activations, the SE channel multiply, residual adds and pooling are not counted
(BN folds into the convs at inference; the rest is elementwise). This reproduces V1 Tables 6-7 (569M),
V2 Table 4 (300M) and V3 Tables 3 and 9 (217M / 56M), and torchvision's ``_ops``.

Parameters count every trainable tensor, BatchNorm gamma/beta included (torchvision, timm); the TF-Slim
V2 README leaves BN out, which :attr:`Profile.params_without_bn` gives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class LayerCost:
    """One Conv2d or Linear: its name, kind, output shape, parameters and multiply-adds (batch 1)."""

    name: str
    kind: str  # "conv", "depthwise", "pointwise", "linear"
    out_shape: tuple[int, ...]
    params: int
    madds: int
    kernel_size: int = 1
    in_channels: int = 0
    out_channels: int = 0


@dataclass
class SeparableCost:
    """A depthwise conv and the 1x1 conv after it, against the full conv they replace (V1 equation 5)."""

    depthwise: str
    pointwise: str
    madds: int  # depthwise + pointwise
    full_conv_madds: int  # D_K^2 * M * N * D_F^2
    kernel_size: int
    out_channels: int

    @property
    def ratio(self) -> float:
        return self.madds / self.full_conv_madds

    @property
    def predicted_ratio(self) -> float:
        """1/N + 1/D_K^2, V1 Section 3.1."""
        return 1 / self.out_channels + 1 / self.kernel_size**2


@dataclass
class Profile:
    name: str
    resolution: int
    params: int
    madds: int
    params_without_bn: int
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def separable(self) -> list[SeparableCost]:
        """Every depthwise conv paired with the 1x1 conv that follows it at the same resolution."""
        pairs = []
        for i, dw in enumerate(self.layers):
            if dw.kind != "depthwise":
                continue
            for pw in self.layers[i + 1 :]:
                if (
                    pw.kind == "pointwise"
                    and pw.in_channels == dw.out_channels
                    and pw.out_shape[1:] == dw.out_shape[1:]
                ):
                    spatial = pw.out_shape[1] * pw.out_shape[2]
                    full = dw.kernel_size**2 * dw.in_channels * pw.out_channels * spatial
                    pairs.append(
                        SeparableCost(
                            dw.name, pw.name, dw.madds + pw.madds, full, dw.kernel_size, pw.out_channels
                        )
                    )
                    break
        return pairs

    def summary(self) -> dict:
        """The JSON form: name, resolution, params, madds (and params without BN)."""
        data = asdict(self)
        data.pop("layers")
        return data


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if module.kernel_size == (1, 1) and module.groups == 1:
        return "pointwise"
    return "conv"


def _params_without_bn(model: nn.Module) -> int:
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)
    bn = sum(
        p.numel() for m in model.modules() if isinstance(m, bn_types) for p in m.parameters(recurse=False)
    )
    return sum(p.numel() for p in model.parameters()) - bn


@torch.no_grad()
def profile_module(
    model: nn.Module, resolution: int | tuple[int, int] = 224, in_chans: int = 3, name: str = ""
) -> Profile:
    """Count parameters and multiply-adds of ``model`` on one ``in_chans x resolution x resolution`` image."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    layers: list[LayerCost] = []

    def hook(module: nn.Module, inputs, output) -> None:
        out = output[0]  # batch 1
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.Linear):
            madds = out.numel() * module.in_features
            kernel, in_ch, out_ch = 1, module.in_features, module.out_features
        else:
            kernel = module.kernel_size[0] * module.kernel_size[1]
            madds = out.numel() * (module.in_channels // module.groups) * kernel
            kernel, in_ch, out_ch = module.kernel_size[0], module.in_channels, module.out_channels
        layers.append(
            LayerCost(names[module], _kind(module), tuple(out.shape), params, madds, kernel, in_ch, out_ch)
        )

    names = {module: module_name for module_name, module in model.named_modules()}
    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, height, width))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return Profile(
        name=name or type(model).__name__,
        resolution=height if height == width else (height, width),
        params=sum(p.numel() for p in model.parameters()),
        madds=sum(layer.madds for layer in layers),
        params_without_bn=_params_without_bn(model),
        layers=layers,
    )
