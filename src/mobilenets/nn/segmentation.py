"""LR-ASPP: the Lite Reduced Atrous Spatial Pyramid Pooling segmentation head (V3 Section 6.4, Figure 10).

The backbone runs at output stride 16 (its last stride-2 stage dilated instead). The head has two
branches on that last map: a 1x1 conv + BN + ReLU, gated channel by channel by a global average pool
followed by a 1x1 conv and a sigmoid (a squeeze-and-excite-like gate over the whole image). The gated
map is upsampled bilinearly to the 1/8 feature map, both are classified by a 1x1 conv each and added,
and the sum is upsampled to the input. V3 Table 7 reports it on Cityscapes with 128 channels (F=128).

The 1/8 tap is the output of the block that brings the running stride to 8, as torchvision's
``lraspp_mobilenet_v3_large`` takes it, so its weights convert unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .network import MobileNet, init_weights

SEGMENTATION_PREFIX = "lraspp_"
DEEPLAB_PREFIX = "deeplabv3_"
SEGMENTATION_PREFIXES = (SEGMENTATION_PREFIX, DEEPLAB_PREFIX)


MAX_POOL_SIDE = 4096


def _pool_pair(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_POOL_SIDE for v in pair
    ):
        raise ValueError(
            f"{name} must be an int or (height, width) of ints from 1 to {MAX_POOL_SIDE}, got {value!r}"
        )
    return pair


class GatePool(nn.Module):
    """LR-ASPP's pooling: global (torchvision's), or V3 Figure 10's large average pool (49x49 at stride
    (16, 20) on Cityscapes' 1024x2048 input), its kernel clamped to the map so small inputs pool
    globally. No weights either way: checkpoints load with either."""

    def __init__(self, kernel: tuple[int, int] | None = None, stride: tuple[int, int] | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return F.adaptive_avg_pool2d(x, 1)
        kernel = (min(self.kernel[0], x.shape[-2]), min(self.kernel[1], x.shape[-1]))
        return F.avg_pool2d(x, kernel, self.stride)


class LRASPPHead(nn.Module):
    """V3 Figure 10: ``cbr`` (1x1 conv, BN, ReLU) times ``scale`` (pool, 1x1 conv, sigmoid; the gate is
    upsampled back when the pool is not global), upsampled to the low-level map;
    ``low_classifier(low) + high_classifier(gated)``."""

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        num_classes: int,
        channels: int = 128,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        pool_kernel: tuple[int, int] | None = None,
        pool_stride: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            GatePool(pool_kernel, pool_stride),
            nn.Conv2d(high_channels, channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gate = self.scale(high)
        if gate.shape[-2:] != (1, 1):  # a strided pool: one gate per region, spread back over the map
            gate = F.interpolate(gate, size=high.shape[-2:], mode="bilinear", align_corners=False)
        x = self.cbr(high) * gate
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class SegmentationNetwork(nn.Module):
    """What LR-ASPP and DeepLabv3 share: a MobileNet backbone without pooling, head or classifier (at
    output stride 16 or 8), its 1/8 tap, the options that rebuild it, and per-pixel logits upsampled to
    the input. Subclasses add ``head`` and say how it maps (low, high) to logits."""

    prefix = ""

    def __init__(self, backbone: MobileNet, num_classes: int, segmentation_channels: int):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if not isinstance(segmentation_channels, int) or segmentation_channels < 1:
            raise ValueError(f"segmentation_channels must be an integer >= 1, got {segmentation_channels!r}")
        if backbone.output_stride == 32:
            raise ValueError(
                f"{type(self).__name__} needs a backbone at output_stride 16 or 8 (dilated), not 32"
            )
        self.low_index, self.low_channels = _stride_8_tap(backbone)
        self.stem, self.blocks, self.last_conv = backbone.stem, backbone.blocks, backbone.last_conv
        self.high_channels = backbone.num_features
        self.backbone_config = {k: v for k, v in backbone.config.items() if k not in ("arch", "num_classes")}
        self.min_resolution, self.in_chans = backbone.min_resolution, backbone.in_chans
        self.num_classes, self.segmentation_channels = num_classes, segmentation_channels
        self.arch = self.prefix + (backbone.arch or "")
        self.variant = getattr(backbone, "variant", None)
        self.class_names: list[str] | None = None
        self.preprocessing = None
        self.channels_last = not backbone.stem.conv.weight.is_contiguous()  # the backbone's memory format

    def _finish_heads(self, *heads: nn.Module) -> None:
        """torchvision's head init, and the backbone's memory format for the heads too."""
        for head in heads:
            init_weights(head)
            if self.channels_last:
                head.to(memory_format=torch.channels_last)

    @property
    def config(self) -> dict:
        """What rebuilds this network: the registry name and the options of create_model."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "segmentation_channels": self.segmentation_channels,
            **self.extra_config(),
            **self.backbone_config,
        }

    def extra_config(self) -> dict:
        return {}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the 1/8 map, the last map) of the backbone."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[-2:]) < self.min_resolution:
            raise ValueError(
                f"expected an input of shape (N, {self.in_chans}, H, W) with H, W >= {self.min_resolution}, "
                f"got {tuple(x.shape)}"
            )
        x = self.stem(x)
        low = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.low_index:
                low = x
        return low, self.last_conv(x)


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LRASPP(SegmentationNetwork):
    """A MobileNet backbone with the LR-ASPP head; ``forward`` returns per-pixel logits
    (N, num_classes, H, W) at the input's resolution."""

    prefix = SEGMENTATION_PREFIX

    def __init__(
        self,
        backbone: MobileNet,
        num_classes: int = 21,
        segmentation_channels: int = 128,
        pool_kernel: int | tuple[int, int] | None = None,
        pool_stride: int | tuple[int, int] | None = None,
    ):
        super().__init__(backbone, num_classes, segmentation_channels)
        self.pool_kernel = _pool_pair(pool_kernel, "pool_kernel")
        self.pool_stride = _pool_pair(pool_stride, "pool_stride")
        if self.pool_stride and not self.pool_kernel:
            raise ValueError("pool_stride needs pool_kernel (the default pool is global)")
        # The head's BN keeps PyTorch's defaults (eps 1e-5), as torchvision's head does, whatever the
        # backbone's (V3: 1e-3): its weights convert unchanged.
        self.head = LRASPPHead(
            self.low_channels,
            self.high_channels,
            num_classes,
            segmentation_channels,
            pool_kernel=self.pool_kernel,
            pool_stride=self.pool_stride,
        )
        self._finish_heads(self.head)

    def extra_config(self) -> dict:
        return {
            **({"pool_kernel": list(self.pool_kernel)} if self.pool_kernel else {}),
            **({"pool_stride": list(self.pool_stride)} if self.pool_stride else {}),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.features(x)
        return _upsample(self.head(low, high), x.shape[-2:])


class ASPP(nn.Module):
    """DeepLabv3's Atrous Spatial Pyramid Pooling (Chen et al. 2017, Section 3.3), as torchvision builds
    it: a 1x1 branch, three 3x3 branches at ``rates``, an image-pooling branch, concatenated and
    projected to ``channels`` (with dropout 0.5 in training)."""

    def __init__(self, in_channels: int, rates: tuple[int, ...] = (12, 24, 36), channels: int = 256):
        super().__init__()

        def cbr(kernel: int, rate: int = 1) -> list[nn.Module]:
            pad = rate if kernel == 3 else 0
            conv = nn.Conv2d(in_channels, channels, kernel, padding=pad, dilation=rate, bias=False)
            return [conv, nn.BatchNorm2d(channels), nn.ReLU()]

        self.convs = nn.ModuleList(
            [nn.Sequential(*cbr(1))]
            + [nn.Sequential(*cbr(3, rate)) for rate in rates]
            + [nn.Sequential(nn.AdaptiveAvgPool2d(1), *cbr(1))]
        )
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [conv(x) for conv in self.convs[:-1]]
        pooled = self.convs[-1](x)
        branches.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(branches, dim=1))


class DeepLabV3(SegmentationNetwork):
    """A MobileNet backbone with DeepLabv3's head (ASPP, a 3x3 conv, a 1x1 classifier), as V2 Section 6.3
    evaluates it and torchvision ships ``deeplabv3_mobilenet_v3_large``. ``aux_classifier=True`` adds
    torchvision's auxiliary FCN head on the 1/8 map (training only: :meth:`forward_with_aux`)."""

    prefix = DEEPLAB_PREFIX

    def __init__(
        self,
        backbone: MobileNet,
        num_classes: int = 21,
        segmentation_channels: int = 256,
        aux_classifier: bool = False,
    ):
        super().__init__(backbone, num_classes, segmentation_channels)
        c, low = segmentation_channels, self.low_channels
        self.head = nn.Sequential(
            ASPP(self.high_channels, channels=c),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, num_classes, 1),
        )
        self.aux_classifier = aux_classifier
        self.aux = None
        if aux_classifier:
            self.aux = nn.Sequential(
                nn.Conv2d(low, low // 4, 3, padding=1, bias=False),
                nn.BatchNorm2d(low // 4),
                nn.ReLU(),
                nn.Dropout(0.1),
                nn.Conv2d(low // 4, num_classes, 1),
            )
        self._finish_heads(*[h for h in (self.head, self.aux) if h is not None])

    def extra_config(self) -> dict:
        return {"aux_classifier": True} if self.aux_classifier else {}

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None), both at the input's resolution."""
        low, high = self.features(x)
        out = _upsample(self.head(high), x.shape[-2:])
        return out, (_upsample(self.aux(low), x.shape[-2:]) if self.aux is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


def _stride_8_tap(backbone: MobileNet) -> tuple[int, int]:
    """(index, channels) of the block whose stride brings the running stride to 8."""
    stride = backbone.plan.stem.stride
    for i, block in enumerate(backbone.plan.blocks):
        stride *= block.stride
        if stride == 8 and block.stride > 1:
            return i, block.out_channels
    raise ValueError(f"{backbone.arch} has no block that reaches stride 8")


def segmentation_backbone_name(name: str) -> str:
    """The backbone's registry name in a segmentation model's name: "lraspp_mobilenet_v2_035" ->
    "mobilenet_v2_035"; a family without a width means width 1.0 ("lraspp_mobilenet_v3_large", as
    torchvision names it)."""
    from .registry import FAMILIES

    rest = name
    for prefix in SEGMENTATION_PREFIXES:
        rest = rest.removeprefix(prefix)
    return f"{rest}_100" if rest in FAMILIES else rest


def is_segmentation_name(name: str) -> bool:
    return name.startswith(SEGMENTATION_PREFIXES)
