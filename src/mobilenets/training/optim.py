"""The optimisation step: optimizer with decay groups, the learning-rate schedule, mixed precision.

The schedule is a pure function of the step, so resuming needs only the step count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    epoch = step / steps_per_epoch
    if epoch < config.warmup_epochs:
        return config.lr * (0.01 + 0.99 * epoch / config.warmup_epochs)
    if config.schedule == "step":
        return config.lr * config.decay_rate ** math.floor(
            (epoch - config.warmup_epochs) / config.decay_epochs
        )
    total = config.epochs - config.warmup_epochs
    progress = min(1.0, (epoch - config.warmup_epochs) / max(total, 1e-8))
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """No weight decay on BN and biases (they set scale and offset, not capacity)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, foreach=True)
    if config.optimizer == "rmsprop":
        # TF's RMSProp adds eps inside the square root: eps 1e-3 there ~ sqrt(1e-3) here (timm's rmsproptf).
        return torch.optim.RMSprop(
            groups, lr=config.lr, alpha=0.9, eps=0.0316, momentum=config.momentum, foreach=True
        )
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True, foreach=True)


class TrainStep:
    """One optimisation step as ``fit`` runs it: channels-last input, autocast, scaled backward, clipping."""

    def __init__(
        self,
        net: nn.Module,
        optimizer,
        criterion,
        amp_dtype=None,
        scaler=None,
        channels_last=True,
        grad_clip: float = 0.0,
        device: torch.device | None = None,
    ):
        self.net, self.optimizer, self.criterion = net, optimizer, criterion
        self.amp_dtype, self.channels_last, self.grad_clip = amp_dtype, channels_last, grad_clip
        self.device = device or torch.device("cpu")
        self.scaler = scaler or torch.amp.GradScaler(self.device.type, enabled=False)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.net(images)
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if isinstance(logits, tuple):  # a detector's (class logits, box offsets)
            return tuple(o.detach() for o in logits), loss.detach()
        return logits.detach(), loss.detach()
