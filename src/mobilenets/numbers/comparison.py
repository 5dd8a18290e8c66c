"""The comparison networks of V1 Table 8, built from their own papers for profiling (untrained).

- VGG-16: Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556, Table 1 configuration D.
- GoogLeNet: Szegedy et al. 2014, https://arxiv.org/abs/1409.4842, Table 1 (inception v1, without the
  auxiliary classifiers, which are dropped at inference; no BatchNorm, as in the paper).

torchvision's ``googlenet`` is not used: it adds BatchNorm and uses 3x3 instead of 5x5 convs in the
"5x5" branch, so it is not the network V1 compared against.
"""

from __future__ import annotations

import torch
from torch import nn

# VGG Table 1, configuration D: conv3 output channels, "M" = 2x2 max pool.
VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 (configuration D): 13 3x3 convs with ReLU, five max pools, FC-4096, FC-4096, FC-1000."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG16_D:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The FC layers are defined on a 7x7 map (224 input); adaptive pooling lets other sizes run.
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 7))


def _conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2), nn.ReLU(inplace=True)
    )


class Inception(nn.Module):
    """GoogLeNet Figure 2(b): 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max pool -> 1x1, concatenated."""

    def __init__(
        self, in_ch: int, c1x1: int, c3x3_reduce: int, c3x3: int, c5x5_reduce: int, c5x5: int, pool_proj: int
    ):
        super().__init__()
        self.branch1 = _conv(in_ch, c1x1, 1)
        self.branch3 = nn.Sequential(_conv(in_ch, c3x3_reduce, 1), _conv(c3x3_reduce, c3x3, 3))
        self.branch5 = nn.Sequential(_conv(in_ch, c5x5_reduce, 1), _conv(c5x5_reduce, c5x5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv(in_ch, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


# GoogLeNet Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),  # 28 x 28 x 256
    "3b": (128, 128, 192, 32, 96, 64),  # 28 x 28 x 480
    "4a": (192, 96, 208, 16, 48, 64),  # 14 x 14 x 512
    "4b": (160, 112, 224, 24, 64, 64),  # 14 x 14 x 512
    "4c": (128, 128, 256, 24, 64, 64),  # 14 x 14 x 512
    "4d": (112, 144, 288, 32, 64, 64),  # 14 x 14 x 528
    "4e": (256, 160, 320, 32, 128, 128),  # 14 x 14 x 832
    "5a": (256, 160, 320, 32, 128, 128),  # 7 x 7 x 832
    "5b": (384, 192, 384, 48, 128, 128),  # 7 x 7 x 1024
}


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1) as in Table 1 of its paper; LRN layers omitted (they have no weights)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            _conv(3, 64, 7, 2),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            _conv(64, 64, 1),
            _conv(64, 192, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        stages: list[nn.Module] = []
        in_ch = 192
        for name, widths in GOOGLENET_INCEPTIONS.items():
            if name in ("4a", "5a"):
                stages.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            stages.append(Inception(in_ch, *widths))
            in_ch = widths[0] + widths[2] + widths[4] + widths[5]
        self.inceptions = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.4)
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.inceptions(self.stem(x))).flatten(1)
        return self.classifier(self.dropout(x))


REFERENCE_NETS = {"googlenet": GoogLeNet, "vgg16": VGG16}
