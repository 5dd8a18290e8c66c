"""SSDLite: the single-shot detector with depthwise separable heads (V2 Section 6.2, V3 Section 6.3).

SSD predicts, for every default box at every cell of several feature maps, class scores and a box
offset. SSDLite (V2 Section 6.2) replaces SSD's 3x3 prediction convs and extra layers by depthwise
separable ones: on V2 it cuts the head from 14.8M parameters / 1.25B MAdds to 2.1M / 0.35B (V2 Table 5).

The feature maps, as torchvision's ``ssdlite320_mobilenet_v3_large`` builds them, so its weights line up:

- C4: the expansion layer of the block that leaves output stride 16 (V2: layer 15, 576 channels;
  V3-Large: bneck 13, 672; V3 Section 6.3); V1 has no expansion, so its stride-16 block output is used;
- C5: the last feature map before pooling (with ``reduced_tail``, V3's last stage at half width);
- four extra layers (1x1 conv to half width, 3x3 depthwise at stride 2, 1x1 conv), 512, 256, 256 and
  128 channels, halving the map each time;
- per map, a classification and a box-regression head: 3x3 depthwise + BN + ReLU6, then a 1x1 conv.

``forward`` gives the raw head outputs (what training and export need); ``detect`` adds the default
boxes, box decoding and post-processing of :mod:`.boxes`.
"""

from __future__ import annotations

import torch
from torch import nn

from .boxes import decode, default_boxes, postprocess
from .layers import ConvBNAct
from .network import MobileNet

DETECTION_PREFIX = "ssdlite_"
EXTRA_CHANNELS = (512, 256, 256, 128)
ANCHORS_PER_CELL = 6  # aspect ratios 1, 2, 1/2, 3, 1/3 and the extra scale-1 box (torchvision's [2, 3])
# TF's object detection API (where the papers' Table 6 models were trained) puts 3 boxes per cell on the
# first map (reduce_boxes_in_lowest_layer); torchvision puts 6 everywhere.
FIRST_MAP_BOXES = (6, 3)


def init_normal(module: nn.Module) -> None:
    """SSDLite's init (TF's object detection API, torchvision's ssdlite320_mobilenet_v3_large): N(0, 0.03)
    conv weights, zero bias, for the extra layers and heads, and for the backbone too when it is not
    pretrained."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.03)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ExtraBlock(nn.Sequential):
    """One SSDLite extra layer: 1x1 to ``out // 2``, 3x3 depthwise at stride 2, 1x1 to ``out``; ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, norm: dict):
        middle = out_channels // 2
        super().__init__(
            ConvBNAct(in_channels, middle, 1, act="relu6", **norm),
            ConvBNAct(middle, middle, 3, stride=2, groups=middle, act="relu6", **norm),
            ConvBNAct(middle, out_channels, 1, act="relu6", **norm),
        )


class PredictionBlock(nn.Sequential):
    """An SSDLite predictor: 3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias to ``out`` channels."""

    def __init__(self, in_channels: int, out_channels: int, norm: dict):
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, groups=in_channels, act="relu6", **norm),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class SSDLite(nn.Module):
    """A MobileNet backbone with SSDLite's extra layers and heads; ``forward`` returns the raw outputs
    ``(class_logits (N, boxes, num_classes), box_regression (N, boxes, 4))``, boxes ordered map by map,
    then row, column and default box, as torchvision orders them."""

    prefix = DETECTION_PREFIX
    classifier_prefixes = ("classification.",)  # what reset_classifier replaces when fine-tuning

    def __init__(
        self,
        backbone: MobileNet,
        num_classes: int = 91,
        width: float = 1.0,
        min_depth: int = 16,
        first_map_boxes: int = 6,
    ):
        super().__init__()
        if first_map_boxes not in FIRST_MAP_BOXES:
            raise ValueError(
                f"first_map_boxes must be 6 (torchvision) or 3 (TF's reduce_boxes_in_lowest_layer), got {first_map_boxes!r}"
            )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2 (class 0 is the background), got {num_classes!r}"
            )
        if backbone.output_stride != 32:
            raise ValueError(
                "SSDLite takes its maps at strides 16 and 32: build the backbone at output_stride 32"
            )
        infos = backbone.feature_info_for("expansion")
        self.backbone_taps = (len(infos) - 2, len(infos) - 1)
        c4, c5 = infos[-2], infos[-1]
        if (c4.reduction, c5.reduction) != (16, 32):
            raise ValueError(
                f"{backbone.arch}: expected maps at strides 16 and 32, got {c4.reduction}, {c5.reduction}"
            )
        norm = dict(bn_eps=backbone.bn_eps, bn_momentum=backbone.bn_momentum)
        depths = [max(min_depth, int(c * width)) for c in EXTRA_CHANNELS]
        self.backbone = backbone
        backbone.head, backbone.head_act, backbone.classifier = nn.Identity(), nn.Identity(), nn.Identity()
        self.extra = nn.ModuleList()
        channels = [c4.num_chs, c5.num_chs]
        for depth in depths:
            self.extra.append(ExtraBlock(channels[-1], depth, norm))
            channels.append(depth)
        self.map_channels = tuple(channels)
        self.boxes_per_cell = (first_map_boxes,) + (ANCHORS_PER_CELL,) * (len(channels) - 1)
        pairs = list(zip(channels, self.boxes_per_cell, strict=True))
        self.classification = nn.ModuleList(
            PredictionBlock(c, boxes * num_classes, norm) for c, boxes in pairs
        )
        self.regression = nn.ModuleList(PredictionBlock(c, boxes * 4, norm) for c, boxes in pairs)
        for module in (self.extra, self.classification, self.regression):
            init_normal(module)
            if not backbone.stem.conv.weight.is_contiguous():  # the backbone's channels-last format
                module.to(memory_format=torch.channels_last)
        self.num_classes, self.width, self.min_depth = num_classes, width, min_depth
        self.first_map_boxes = first_map_boxes
        self.arch = self.prefix + (backbone.arch or "")
        self.min_resolution, self.in_chans = backbone.min_resolution, backbone.in_chans
        self.c4_block = int(c4.module.split(".")[1])  # the block whose expansion (or input, V1) is C4
        self.class_names: list[str] | None = None
        self.preprocessing = None

    @property
    def config(self) -> dict:
        """What rebuilds this network: the registry name and the options of create_model."""
        backbone = {k: v for k, v in self.backbone.config.items() if k not in ("arch", "num_classes")}
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            **({"first_map_boxes": self.first_map_boxes} if self.first_map_boxes != 6 else {}),
            **backbone,
        }

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six maps the heads see: C4, C5 and the four extra layers' outputs."""
        maps = self.backbone.forward_intermediates(x, list(self.backbone_taps), "expansion")
        for block in self.extra:
            maps.append(block(maps[-1]))
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._predict(self.feature_maps(x))

    @torch.no_grad()
    def detect(self, x: torch.Tensor, **thresholds) -> list[dict[str, torch.Tensor]]:
        """Detections per image of a normalised batch: boxes (x1, y1, x2, y2) in the input's pixels,
        scores and labels (1.. num_classes - 1; 0 is the background). ``thresholds`` go to
        :func:`.boxes.postprocess` (score 0.001, NMS IoU 0.55, 300 candidates per class, 300 boxes)."""
        maps = self.feature_maps(x)
        logits, regression = self._predict(maps)
        size = tuple(x.shape[-2:])
        anchors = default_boxes([tuple(m.shape[-2:]) for m in maps], size, self.first_map_boxes).to(x.device)
        return postprocess(logits.float(), regression.float(), anchors, size, **thresholds)

    @torch.no_grad()
    def default_boxes(self, size: tuple[int, int]) -> torch.Tensor:
        """(boxes, 4) default boxes for a ``size`` (height, width) input, as :meth:`detect` places them.
        The map sizes come from a dry run in eval mode (BatchNorm statistics untouched)."""
        was_training = self.training
        try:
            maps = self.eval().feature_maps(
                torch.zeros(1, self.in_chans, *size, device=self.backbone.stem.conv.weight.device)
            )
        finally:
            self.train(was_training)
        return default_boxes([tuple(m.shape[-2:]) for m in maps], tuple(size), self.first_map_boxes)

    def _predict(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = [
            _flatten(head(m), self.num_classes) for head, m in zip(self.classification, maps, strict=True)
        ]
        boxes = [_flatten(head(m), 4) for head, m in zip(self.regression, maps, strict=True)]
        return torch.cat(logits, 1), torch.cat(boxes, 1)


class DecodedDetector(nn.Module):
    """An SSDLite for one input size, as it is exported: ``forward`` returns ``(boxes (N, B, 4) as x1, y1,
    x2, y2 in input pixels clipped to the input, scores (N, B, num_classes) softmax)``, the default boxes a constant. What
    remains (threshold, per-class NMS, top-k) is done by the runtime's caller or its NMS op."""

    def __init__(self, model: SSDLite, resolution: int | tuple[int, int]):
        super().__init__()
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        with torch.no_grad():
            maps = model.eval().feature_maps(torch.zeros(1, model.in_chans, *size))
        self.model = model
        self.register_buffer(
            "anchors", default_boxes([tuple(m.shape[-2:]) for m in maps], size, model.first_map_boxes)
        )
        self.register_buffer(
            "limits", torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32)
        )
        self.arch, self.class_names, self.preprocessing = model.arch, model.class_names, model.preprocessing
        self.min_resolution, self.in_chans, self.num_classes = (
            model.min_resolution,
            model.in_chans,
            model.num_classes,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, regression = self.model(x)
        # clipped to the image, as torchvision's post-processing clips them before NMS
        boxes = torch.minimum(decode(regression, self.anchors).clamp(min=0), self.limits)
        return boxes, torch.softmax(logits, -1)


def _flatten(x: torch.Tensor, per_box: int) -> torch.Tensor:
    """(N, anchors * K, H, W) -> (N, H * W * anchors, K)."""
    n, _, h, w = x.shape
    return x.view(n, -1, per_box, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_box)


def is_detection_name(name: str) -> bool:
    return name.startswith(DETECTION_PREFIX)
