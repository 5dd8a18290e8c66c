"""MobileNet as one nn.Module built from a :class:`~mobilenets.scaling.NetworkPlan`.

stem -> blocks -> last_conv -> global average pool -> head -> dropout -> classifier, with backbone
access in timm's style: ``forward_features``, ``forward_head(pre_logits=...)``, ``feature_info`` and
``forward_intermediates`` for the multi-scale maps (including V3's expansion-layer tap, V3 Section 6.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import DepthwiseSeparable, InvertedResidual
from .layers import PADDING_MODES, ConvBNAct, make_activation
from .scaling import NetworkPlan, with_output_stride, with_reduced_tail

FEATURE_LOCATIONS = ("bottleneck", "expansion")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass(frozen=True)
class FeatureInfo:
    """One multi-scale feature map: its channels, its stride relative to the input, the module it comes from."""

    num_chs: int
    reduction: int
    module: str


def init_weights(root: nn.Module) -> None:
    """torchvision's MobileNet (and segmentation-head) init: Kaiming (fan-out) convs, unit BN, small
    normal Linear."""
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


class MobileNet(nn.Module):
    """A MobileNet (V1, V2 or V3) built from a plan; see :func:`mobilenets.create_model`.

    Args:
        plan: the concrete layer plan (:mod:`mobilenets.scaling`).
        num_classes: classifier outputs; 0 removes the classifier (``forward`` returns pooled features).
        in_chans: input channels (3 for RGB, 1 for grayscale, ...).
        dropout: dropout probability before the classifier (training only).
        bn_eps: BatchNorm epsilon (1e-3 for TF/Keras-trained weights and torchvision's V3, 1e-5 else).
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention; TF decay 0.99 = 0.01).
        padding: "symmetric" (PyTorch) or "same" (TensorFlow's asymmetric padding on strided layers).
        output_stride: 32, 16 or 8; below 32 the last strided layers dilate instead (segmentation).
        memory_format: "channels_last" (default) stores conv weights NHWC, so oneDNN / cuDNN run every
            conv channels-last: 1.1-1.6x faster on CPU for inference and training (benchmarks/eager.md).
            ``state_dict()`` still returns ordinary contiguous tensors. "contiguous" keeps NCHW.
        head_conv: V3 only; False drops the 1x1 "conv2d, NBN" after pooling (V3 Tables 1-2, last rows
            but one), so the classifier takes the pooled features: the shape of a Keras V3 base saved
            with ``include_top=False`` and fine-tuned with its own Dense layer.
        atrous_style: below output stride 32, which blocks dilate: "slim" (TF-Slim / DeepLab) or
            "torchvision" (its ``dilated=True`` backbones); see :func:`~.scaling.with_output_stride`.
        reduced_tail: halve the last stage's widths (V3's RF2 for detection and segmentation heads); see
            :func:`~.scaling.with_reduced_tail`.
    """

    def __init__(
        self,
        plan: NetworkPlan,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        padding: str = "symmetric",
        output_stride: int = 32,
        memory_format: str = "channels_last",
        head_conv: bool = True,
        atrous_style: str = "slim",
        reduced_tail: bool = False,
    ):
        super().__init__()
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {tuple(MEMORY_FORMATS)}, got {memory_format!r}")
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0 = no classifier), got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(head_conv, bool):
            raise ValueError(f"head_conv must be True or False, got {head_conv!r}")
        if not isinstance(reduced_tail, bool):
            raise ValueError(f"reduced_tail must be True or False, got {reduced_tail!r}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        # The smallest input whose last map is 1x1 at the undilated stride (32 for every MobileNet).
        self.min_resolution = plan.stem.stride * math.prod(block.stride for block in plan.blocks)
        plan = with_output_stride(
            with_reduced_tail(plan) if reduced_tail else plan, output_stride, atrous_style
        )
        self.atrous_style, self.reduced_tail = atrous_style, reduced_tail
        self.plan = plan
        self.in_chans, self.num_classes, self.output_stride = in_chans, num_classes, output_stride
        self.dropout_rate, self.bn_eps, self.bn_momentum, self.padding = dropout, bn_eps, bn_momentum, padding
        self.head_conv = head_conv or not plan.head_channels  # V1 / V2 have none to drop
        self.arch: str | None = None  # the registry name, set by create_model; checkpoints record it
        self.class_names: list[str] | None = None  # set when weights come with class names
        self.preprocessing = None  # a mobilenets.preprocessing.Preprocessing, set with weights
        norm = dict(padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum)

        stem = plan.stem
        self.stem = ConvBNAct(
            in_chans, stem.out_channels, stem.kernel_size, stem.stride, act=stem.act, **norm
        )
        self.blocks = nn.Sequential(*[_make_block(block, norm) for block in plan.blocks])
        last = plan.last_conv
        self.last_conv = (
            ConvBNAct(last.in_channels, last.out_channels, 1, act=last.act, **norm) if last else nn.Identity()
        )
        self.num_features = plan.features_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        if plan.head_channels and head_conv:
            # V3's "conv2d 1x1, NBN" after pooling: a 1x1 conv on a 1x1 map is a Linear (with bias, no BN).
            self.head = nn.Linear(self.num_features, plan.head_channels)
            self.head_act = make_activation(plan.head_act)
            self.head_hidden_size = plan.head_channels
        else:
            self.head, self.head_act = nn.Identity(), nn.Identity()
            self.head_hidden_size = self.num_features
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()
        self.feature_info = self._feature_info("bottleneck")
        self.reset_parameters()
        self.to(memory_format=MEMORY_FORMATS[memory_format])
        # Serializers (safetensors, ONNX initialisers) expect dense row-major tensors.
        self.register_state_dict_post_hook(_contiguous_state_dict)

    @property
    def config(self) -> dict:
        """What rebuilds this network: the registry name and the options of create_model."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "dropout": self.dropout_rate,
            "bn_eps": self.bn_eps,
            "bn_momentum": self.bn_momentum,
            "padding": self.padding,
            "output_stride": self.output_stride,
            # Only where it differs from the paper, so that configs of ordinary models stay as they were.
            **({} if self.head_conv else {"head_conv": False}),
            **({} if self.atrous_style == "slim" else {"atrous_style": self.atrous_style}),
            **({"reduced_tail": True} if self.reduced_tail else {}),
        }

    # -- initialisation -------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        init_weights(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (fine-tuning)."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    # -- forward ----------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Clear errors for inputs the network cannot take (wrong rank, channel count, too small)."""
        if x.dim() != 4:
            raise ValueError(f"expected an input of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"input has {x.shape[1]} channels but the model was built with in_chans={self.in_chans}"
            )
        if min(x.shape[-2:]) < self.min_resolution:
            raise ValueError(
                f"input resolution {tuple(x.shape[-2:])} is too small: this network downsamples by "
                f"{self.min_resolution}, so height and width must be at least {self.min_resolution}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling, (N, num_features, H / output_stride, W / output_stride)."""
        self.check_input(x)
        return self.last_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, head and classifier; ``pre_logits=True`` stops before the classifier."""
        x = self.head_act(self.head(self.flatten(self.pool(x))))
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- multi-scale features ---------------------------------------------------------------------------
    def _taps(self, location: str) -> list[tuple[int, FeatureInfo]]:
        """(block index, info) for each feature map: the end of each stride level.

        For ``location="expansion"`` every level but the last is tapped at the expansion layer of the
        block that leaves it (the C4 tap of SSDLite, V2 Section 6.2 / V3 Section 6.3), which carries
        the wider, pre-bottleneck features. The last level is the map before pooling (V3's C5).
        """
        if location not in FEATURE_LOCATIONS:
            raise ValueError(f"location must be one of {FEATURE_LOCATIONS}, got {location!r}")
        taps: list[tuple[int, FeatureInfo]] = []
        reduction = self.plan.stem.stride
        for i, block in enumerate(self.plan.blocks):
            if block.stride > 1:
                if location == "expansion" and block.kind == "inverted_residual" and i > 0:
                    info = FeatureInfo(block.expanded_channels, reduction, f"blocks.{i}.expand")
                else:
                    module = f"blocks.{i - 1}" if i > 0 else "stem"
                    info = FeatureInfo(
                        self.plan.blocks[i - 1].out_channels if i else self.plan.stem.out_channels,
                        reduction,
                        module,
                    )
                taps.append((i, info))
                reduction *= block.stride
        last_module = "last_conv" if self.plan.last_conv else f"blocks.{len(self.plan.blocks) - 1}"
        taps.append((len(self.plan.blocks), FeatureInfo(self.num_features, reduction, last_module)))
        return taps

    def _feature_info(self, location: str) -> list[FeatureInfo]:
        return [info for _, info in self._taps(location)]

    def feature_info_for(self, location: str = "bottleneck") -> list[FeatureInfo]:
        """The feature maps :meth:`forward_intermediates` returns for ``location``."""
        return self._feature_info(location)

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None, location: str = "bottleneck"
    ) -> list[torch.Tensor]:
        """The multi-scale feature maps (strides 2 / 4 / 8 / 16 / 32 at output_stride 32).

        ``indices`` selects entries of :meth:`feature_info_for`; the default is all of them.
        """
        self.check_input(x)
        taps = self._taps(location)
        wanted = set(range(len(taps))) if indices is None else {i % len(taps) for i in indices}
        by_block = {block_index: n for n, (block_index, _) in enumerate(taps)}
        features: list[torch.Tensor] = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            n = by_block.get(i)
            if n is not None and taps[n][1].module.endswith(".expand"):
                x, expanded = block.forward_with_expansion(x)
                if n in wanted:
                    features.append(expanded)
                continue
            if n is not None and n in wanted:
                features.append(x)
            x = block(x)
        x = self.last_conv(x)
        if len(taps) - 1 in wanted:
            features.append(x)
        return features


class FeatureExtractor(nn.Module):
    """A backbone whose forward returns the multi-scale maps (timm's ``features_only=True``).

    ``out_indices`` picks entries of ``model.feature_info_for(location)``; the classifier, head and pooling
    are dropped so they hold no memory.
    """

    def __init__(
        self, model: MobileNet, out_indices: tuple[int, ...] | None = None, location: str = "bottleneck"
    ):
        super().__init__()
        infos = model.feature_info_for(location)
        self.out_indices = tuple(range(len(infos))) if out_indices is None else tuple(out_indices)
        if any(not -len(infos) <= i < len(infos) for i in self.out_indices):
            raise ValueError(
                f"out_indices {self.out_indices} out of range: this model has {len(infos)} feature maps"
            )
        self.location = location
        self.feature_info = [infos[i] for i in self.out_indices]
        model.head, model.head_act, model.classifier = nn.Identity(), nn.Identity(), nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, list(self.out_indices), self.location)


def _contiguous_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


def _make_block(block, norm: dict) -> nn.Module:
    if block.kind == "depthwise_separable":
        return DepthwiseSeparable(
            block.in_channels,
            block.out_channels,
            block.stride,
            block.kernel_size,
            block.dilation,
            block.act,
            **norm,
        )
    return InvertedResidual(
        block.in_channels,
        block.expanded_channels,
        block.out_channels,
        block.kernel_size,
        block.stride,
        block.dilation,
        block.se_channels,
        block.act,
        **norm,
    )
