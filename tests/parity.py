"""Helpers for parity tests: inputs the output depends on, BN statistics that make logits vary.

With default init a MobileNet's logits are nearly constant across inputs, so a comparison of two
implementations would pass even if they differed. These helpers give BatchNorm random affine parameters
and recalibrate its running statistics on structured inputs (upsampled low-resolution colour noise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def structured_inputs(
    n: int, resolution: int | tuple[int, int], seed: int = 0, channels: int = 3
) -> torch.Tensor:
    """Smooth colour images: 7x7 noise upsampled bicubically, roughly in [-2, 2] like normalised images."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(n, channels, 7, 7, generator=generator)
    return F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0, passes: int = 3, resolution: int = 96) -> nn.Module:
    """Random BN gamma/beta, then running statistics recalibrated with train-mode passes (dropout off)."""
    generator = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.num_features, generator=generator) * 1.5 + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.5)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration passes
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for i in range(passes):
        x = structured_inputs(8, resolution, seed=seed * 100 + i)
        model(x[:, : getattr(model, "in_chans", 3)])  # grayscale models take the first channel
    model.eval()
    return model


@torch.no_grad()
def copy_by_order(source: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Copy a state dict into ``target`` tensor by tensor in order, reshaping where only the view differs
    (a Linear (O, I) against a 1x1 conv (O, I, 1, 1))."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst), f"{len(src)} source tensors vs {len(dst)} target tensors"
    state = {}
    for (sk, sv), (dk, dv) in zip(src, dst, strict=True):
        assert sv.numel() == dv.numel(), f"{sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}"
        state[dk] = sv.reshape(dv.shape).clone()
    target.load_state_dict(state, strict=False)


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the largest |logit|."""
    return float((a - b).abs().max() / b.abs().max())


def assert_varies(logits: torch.Tensor, min_spread: float = 1e-2) -> None:
    """The logits must differ across inputs, or the parity comparison proves nothing."""
    spread = float((logits - logits.mean(0, keepdim=True)).abs().max() / logits.abs().max())
    assert spread > min_spread, f"logits barely depend on the input (spread {spread:.2e})"
