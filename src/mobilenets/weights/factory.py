"""``create_model(name, weights=...)``: the registry's network with weights composed on top.

The registry (:mod:`mobilenets.nn.registry`) builds networks and knows nothing of weight files; this module
adds ImageNet weights through the torch.hub cache (:mod:`.pretrained`) or a native checkpoint
(:mod:`.checkpoint`), so imports run one way: nn <- weights.
"""

from __future__ import annotations

from pathlib import Path

from ..nn.detection import DETECTION_PREFIX, is_detection_name
from ..nn.network import FeatureExtractor, MobileNet
from ..nn.registry import build_detection_model, build_model, build_segmentation_model, get_variant
from ..nn.segmentation import LRASPP, DeepLabV3, is_segmentation_name, segmentation_backbone_name
from .checkpoint import CheckpointError, load, read
from .preprocessing import Preprocessing
from .pretrained import PRETRAINED, load_pretrained


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    dropout: float = 0.2,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
    padding: str = "symmetric",
    output_stride: int = 32,
    memory_format: str = "channels_last",
    head_conv: bool = True,
    reduced_tail: bool = False,
    atrous_style: str = "slim",
    segmentation_channels: int | None = None,
    aux_classifier: bool = False,
    pool_kernel: int | tuple[int, int] | None = None,
    pool_stride: int | tuple[int, int] | None = None,
    first_map_boxes: int = 6,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    feature_location: str = "bottleneck",
    weights: str | None = None,
    reset_classifier: bool = False,
) -> MobileNet | FeatureExtractor | LRASPP | DeepLabV3:
    """Build a registered model by name, e.g. ``create_model("mobilenet_v3_small_100", num_classes=5)``.

    ``bn_eps`` / ``bn_momentum`` default to the family's (torchvision's) values; ``padding="same"`` and
    ``bn_eps=1e-3`` match TensorFlow / Keras-trained weights. ``features_only=True`` returns a backbone
    whose forward gives the multi-scale maps (``out_indices`` of ``feature_info_for(feature_location)``).
    ``head_conv=False`` (V3) drops the 1x1 conv after pooling, as a Keras base with include_top=False.
    ``reduced_tail=True`` halves the last stage's widths (V3's RF2 in Tables 6-7; no ImageNet weights fit).
    ``"lraspp_<variant>"`` (``"lraspp_mobilenet_v3_large"``, ``"lraspp_mobilenet_v2_035"``, ...) is the
    variant at output stride 16 (or 8) with the LR-ASPP segmentation head (V3 Section 6.4);
    ``"deeplabv3_<variant>"`` has DeepLabv3's ASPP head (``aux_classifier=True``: torchvision's auxiliary
    head). ``num_classes`` defaults to 21 there; ``segmentation_channels`` is the head's width (LR-ASPP's
    F=128, DeepLabv3's 256 by default); ``pool_kernel`` / ``pool_stride`` give LR-ASPP V3 Figure 10's
    regional pooling (49x49 at (16, 20)) instead of global pooling. ``"ssdlite_<variant>"`` is SSDLite
    (V2 Section 6.2, V3 Section 6.3; ``forward`` gives the raw head outputs, ``detect`` the boxes; 91
    classes by default); with ``weights`` ImageNet weights go into its backbone, or a detection checkpoint loads;
    ``first_map_boxes=3`` is TF's box layout that the papers' Table 6 counts.

    ``weights``: "torchvision" or "keras" (ImageNet weights through the torch.hub cache, see
    :mod:`mobilenets.weights.pretrained`), or the path of a native checkpoint for this architecture. With
    weights, a ``num_classes`` other than theirs needs ``reset_classifier=True`` (keeps the backbone,
    new classifier).
    """
    if is_detection_name(name):
        if weights is not None:
            return _detection_with_weights(
                name,
                weights,
                num_classes=num_classes,  # None: the checkpoint's, or COCO's 91 with ImageNet weights
                reset_classifier=reset_classifier,
                reduced_tail=reduced_tail,
                first_map_boxes=first_map_boxes,
                in_chans=in_chans,
                bn_momentum=bn_momentum,
                memory_format=memory_format,
            )
        return build_detection_model(
            name,
            num_classes=91 if num_classes is None else num_classes,
            reduced_tail=reduced_tail,
            first_map_boxes=first_map_boxes,
            in_chans=in_chans,
            bn_eps=bn_eps,
            bn_momentum=bn_momentum,
            padding=padding,
            memory_format=memory_format,
        )
    segmentation = is_segmentation_name(name)
    if num_classes is None:  # the task's usual default: ImageNet's 1000, or VOC's 21 for segmentation
        num_classes = 21 if segmentation else 1000
    if segmentation:
        if weights is not None:
            raise ValueError(
                f"{name}: weights for segmentation models come from a checkpoint (mobilenets.load), or "
                "from torchvision's file through `mobilenets convert --from torchvision`"
            )
        return build_segmentation_model(
            name,
            num_classes=num_classes,
            segmentation_channels=segmentation_channels,
            aux_classifier=aux_classifier,
            pool_kernel=pool_kernel,
            pool_stride=pool_stride,
            output_stride=16 if output_stride == 32 else output_stride,
            atrous_style=atrous_style,
            in_chans=in_chans,
            bn_eps=bn_eps,
            bn_momentum=bn_momentum,
            padding=padding,
            memory_format=memory_format,
            reduced_tail=reduced_tail,
        )
    features = dict(features_only=features_only, out_indices=out_indices, feature_location=feature_location)
    if weights is None:
        return build_model(
            name,
            num_classes=num_classes,
            in_chans=in_chans,
            dropout=dropout,
            bn_eps=bn_eps,
            bn_momentum=bn_momentum,
            padding=padding,
            output_stride=output_stride,
            memory_format=memory_format,
            head_conv=head_conv,
            atrous_style=atrous_style,
            reduced_tail=reduced_tail,
            **features,
        )
    model = _with_weights(
        name,
        weights,
        num_classes=num_classes,
        reset_classifier=reset_classifier,
        options=dict(
            in_chans=in_chans,
            dropout=dropout,
            output_stride=output_stride,
            memory_format=memory_format,
            **({} if head_conv else {"head_conv": False}),
            **({"reduced_tail": True} if reduced_tail else {}),
            **({} if atrous_style == "slim" else {"atrous_style": atrous_style}),
            **({"bn_eps": bn_eps} if bn_eps is not None else {}),
            **({"bn_momentum": bn_momentum} if bn_momentum is not None else {}),
        ),
    )
    return FeatureExtractor(model, out_indices, feature_location) if features_only else model


def _detection_with_weights(
    name: str, weights: str, *, num_classes: int | None, reset_classifier: bool, **options
):
    """An SSDLite with ImageNet weights in its backbone ("torchvision", "keras", "timm": the classifier's
    weights without its head, as torchvision's ``weights_backbone``; the extra layers and heads stay
    freshly initialised), or a detection checkpoint (``reset_classifier`` for other classes)."""
    if weights in PRETRAINED:
        # The classifier with those weights, through the same checks as create_model(weights=...)
        classifier = _with_weights(
            segmentation_backbone_name(name.removeprefix(DETECTION_PREFIX)),
            weights,
            num_classes=1000,
            reset_classifier=True,  # its head is dropped below
            options={
                "in_chans": options["in_chans"],
                "memory_format": options["memory_format"],
                **({"reduced_tail": True} if options["reduced_tail"] else {}),
                **({"bn_momentum": options["bn_momentum"]} if options["bn_momentum"] is not None else {}),
            },
        )
        model = build_detection_model(
            name,
            num_classes=91 if num_classes is None else num_classes,
            first_map_boxes=options["first_map_boxes"],
            bn_eps=classifier.bn_eps,
            bn_momentum=classifier.bn_momentum,
            padding=classifier.padding,
            memory_format=options["memory_format"],
        )
        state = {
            k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "classifier."))
        }
        model.backbone.load_state_dict(state)  # strict: every backbone tensor comes from the weights
        if classifier.preprocessing is not None:  # the weights' normalisation, at SSDLite's 320 x 320
            pre = classifier.preprocessing
            model.preprocessing = Preprocessing(resize=320, crop=320, mean=pre.mean, std=pre.std)
        return model
    if Path(str(weights)).suffix == ".safetensors" or Path(str(weights)).exists():
        _, metadata = read(weights)
        saved = metadata["config"]["arch"]
        canonical = DETECTION_PREFIX + segmentation_backbone_name(name.removeprefix(DETECTION_PREFIX))
        if saved != canonical:  # ssdlite_mobilenet_v3_large is recorded as ..._large_100
            raise CheckpointError(
                f"{weights} holds {saved} weights, not {name}: create_model({saved!r}, weights=...)"
            )
        overrides = {"memory_format": options["memory_format"]}
        if options["bn_momentum"] is not None:
            overrides["bn_momentum"] = options["bn_momentum"]
        model, _ = load(weights, num_classes=num_classes, reset_classifier=reset_classifier, **overrides)
        return model
    raise ValueError(
        f"weights={weights!r}: use 'torchvision', 'keras' or 'timm' (ImageNet weights for the backbone), or "
        "the path of a detection checkpoint (convert torchvision's SSDLite file with `mobilenets convert`)"
    )


def _with_weights(name: str, weights: str, *, num_classes: int, reset_classifier: bool, options: dict):
    get_variant(name)
    if weights in PRETRAINED:
        if options.get("in_chans", 3) != 3:
            raise ValueError(
                f"{weights} ImageNet weights are for 3-channel RGB input, not in_chans={options['in_chans']}"
            )
        if options.get("reduced_tail"):
            raise ValueError(
                f"{weights} ImageNet weights have the full last stage; reduced_tail=True has none (train it "
                "from scratch, or drop reduced_tail)"
            )
        options.pop("in_chans", None)
        model = load_pretrained(name, weights, **options)
        if num_classes != model.num_classes:
            if not reset_classifier:
                raise CheckpointError(
                    f"{weights} weights have {model.num_classes} classes, not {num_classes}; pass "
                    "reset_classifier=True to keep the backbone and train a new classifier"
                )
            model.reset_classifier(num_classes)
            model.class_names = None
    elif Path(str(weights)).suffix == ".safetensors" or Path(str(weights)).exists():
        _, metadata = read(weights)
        saved = metadata["config"]["arch"]
        if saved != name:
            raise CheckpointError(
                f"{weights} holds {saved} weights, not {name}: create_model({saved!r}, weights=...)"
            )
        model, _ = load(weights, num_classes=num_classes, reset_classifier=reset_classifier, **options)
    else:
        raise ValueError(
            f"weights={weights!r}: use 'torchvision', 'keras', or the path of a .safetensors checkpoint "
            "(convert other files with `mobilenets convert`)"
        )
    return model
