"""Load torchvision, timm and Keras MobileNet weights into our one definition.

One walk over our model lists every weighted layer in forward order (:func:`layer_slots`); each source
library only names those layers (anchors section 3.1), and each file format only says how its tensors are
laid out (section 3.2). The switches that make the numbers equal (section 3.3) travel with the source:
TF 'same' padding and BN eps 1e-3 for Keras and timm's tf_* ports, [-1, 1] input scaling for TF-trained
weights, and dropping class 0 ("background") of 1001-class heads.

Sources:
- torchvision ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``: an nn.Module or a state
  dict file (.pth / .pt / .bin, read with ``torch.load(weights_only=True)``, or .safetensors).
- timm ``mobilenetv1_100``, ``mobilenetv2_*``, ``mobilenetv3_*``, ``tf_mobilenetv3_*``: likewise.
- Keras ``MobileNet``, ``MobileNetV2``, ``MobileNetV3Small/Large``: .h5 as Keras Applications ships them,
  and .keras / .weights.h5 as Keras 3 saves them, read with h5py (no TensorFlow).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..nn.detection import ANCHORS_PER_CELL, DETECTION_PREFIX, is_detection_name
from ..nn.registry import build_detection_model, build_model, build_segmentation_model, get_variant
from ..nn.segmentation import DEEPLAB_PREFIX, is_segmentation_name, segmentation_backbone_name
from . import from_timm, from_torchvision
from .checkpoint import CheckpointError, check_state_dict
from .from_keras import fine_tuned_keras_head, keras_names, keras_tensors, read_keras_weights
from .from_timm import NO_TWIN, timm_names
from .from_torchvision import detection_names, segmentation_names, torchvision_names
from .preprocessing import Preprocessing, imagenet_class_names
from .slots import TF_OPTIONS, TIMM_OPTIONS, TIMM_PREPROCESSING, SourceArch, layer_slots

SOURCES = ("torchvision", "timm", "keras")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SOURCE_ARCHS: dict[str, dict[str, SourceArch]] = {
    "torchvision": from_torchvision.ARCHS,
    "timm": from_timm.ARCHS,
}


def resolve_arch(source: str, arch: str | None) -> SourceArch:
    """``arch`` may be the source library's model name or our registry name."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if arch is None:
        raise ValueError(f"--arch is needed to convert a {source} file (our name or the {source} model name)")
    arch = arch.split(".")[0]  # timm's "name.tag"
    known = SOURCE_ARCHS.get(source, {})
    if arch in known:
        return known[arch]
    if arch in NO_TWIN:
        raise ValueError(
            f"timm's {arch} keeps a 16-channel stem below width 0.75; our {NO_TWIN[arch]} follows TF-Slim "
            "(8 channels), so its weights do not fit any registered model"
        )
    get_variant(arch)  # our registry name, or a ValueError listing what is allowed
    if source == "keras":
        return SourceArch(arch, TF_OPTIONS, Preprocessing.inception())
    family_options = {"torchvision": {}, "timm": TIMM_OPTIONS}[source]
    return SourceArch(arch, family_options, TIMM_PREPROCESSING if source == "timm" else Preprocessing())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or .pth/.pt/.bin through torch.load(weights_only=True); never a pickle."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"{path}: unsupported file type {suffix or '(none)'!r}; torch weights must be .safetensors or "
                f"{'/'.join(TORCH_SUFFIXES)} (read with weights_only=True; other pickles are refused)"
            )
    except CheckpointError:
        raise
    except Exception as error:  # torch.load raises many types for a corrupt or unsafe file
        raise CheckpointError(f"{path} could not be read as a weights-only state dict: {error}") from error
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]  # training checkpoints wrap the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _torch_tensors(state: dict[str, torch.Tensor], name: str, target: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for param, ours in target.state_dict().items():
        key = f"{name}.{param}"
        if key not in state:
            if param == "num_batches_tracked":
                continue
            raise KeyError(key)
        value = state[key]
        if value.numel() == ours.numel() and value.shape != ours.shape:
            value = value.reshape(ours.shape)  # timm conv_head (O, I, 1, 1) -> our head Linear (O, I)
        out[param] = value
    return out


def _drop_background(tensors: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """TF-Slim heads have 1001 outputs, class 0 = background; our 1000-class models drop that row."""
    if tensors["weight"].shape[0] == num_classes + 1:
        return {k: v[1:] for k, v in tensors.items()}
    return tensors


# ---------------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------------


@dataclass
class Converted:
    model: nn.Module
    provenance: dict


def _source_classes(source: str, tensors_or_layers, names_classifier: str) -> int | None:
    if source == "keras":
        arrays = tensors_or_layers.get(names_classifier)
        return None if arrays is None else int(arrays[0].shape[-1])
    weight = tensors_or_layers.get(f"{names_classifier}.weight")
    return None if weight is None else int(weight.shape[0])


def _describe_module(module: nn.Module) -> tuple[str | None, Preprocessing | None]:
    """(source model name, preprocessing) read from a torchvision or timm model object."""
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):  # timm
        size = cfg.get("input_size", (3, 224, 224))[-1]
        crop_pct = cfg.get("crop_pct", 0.875)
        pre = Preprocessing(
            resize=int(round(size / crop_pct)),
            crop=size,
            interpolation=cfg.get("interpolation", "bicubic")
            if cfg.get("interpolation") in ("bilinear", "bicubic")
            else "bicubic",
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        )
        return cfg["architecture"], pre
    name = type(module).__name__
    if (
        name in ("LRASPP", "DeepLabV3")
        and type(getattr(module, "backbone", None)).__name__ == "IntermediateLayerGetter"
    ):
        return {"LRASPP": "lraspp_mobilenet_v3_large", "DeepLabV3": "deeplabv3_mobilenet_v3_large"}[
            name
        ], None
    if name == "MobileNetV2":
        return "mobilenet_v2", None
    if name == "MobileNetV3":
        return ("mobilenet_v3_large" if len(module.features) == 17 else "mobilenet_v3_small"), None
    return None, None


def convert(
    src,
    source: str,
    arch: str | None = None,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    **options,
) -> Converted:
    """Convert ``src`` (a path, or a torchvision / timm nn.Module) from ``source`` into our model.

    ``arch`` is our registry name or the source library's model name; for a model object it is read from
    the object. ``options`` override ``create_model`` options (padding, bn_eps, ...) set by the source.
    The returned model carries class names and preprocessing; save it with :func:`mobilenets.save`.
    """
    provenance: dict = {"source": source}
    preprocessing = None
    if isinstance(src, nn.Module):
        if source == "keras":
            raise ValueError("Keras weights are converted from files (.h5, .keras, .weights.h5)")
        detected, preprocessing = _describe_module(src)
        arch = arch or detected
        state = src.state_dict()
        provenance["object"] = type(src).__name__
        if detected:
            provenance["model"] = detected
    else:
        path = Path(src)
        state = read_keras_weights(path) if source == "keras" else read_torch_state_dict(path)
        provenance |= {"file": path.name, "sha256": file_sha256(path)}
    spec = resolve_arch(source, arch)
    preprocessing = preprocessing or spec.preprocessing
    build = {**spec.options, **options}

    if is_segmentation_name(spec.arch):
        return _convert_segmentation(state, source, spec, build, num_classes, class_names, provenance, arch)
    if is_detection_name(spec.arch):
        return _convert_detection(state, source, spec, build, num_classes, class_names, provenance, arch)
    probe = build_model(spec.arch, **build)
    names = {"torchvision": torchvision_names, "keras": keras_names}.get(source)
    source_names = names(probe) if names else timm_names(probe, list(state))
    classifier_name = source_names[-1]
    if source == "keras" and classifier_name not in state:
        classifier_name, head_conv = fine_tuned_keras_head(state, source_names, probe)
        if not head_conv:  # a V3 base saved with include_top=False: no conv_2 before the user's Dense
            build["head_conv"] = False
            source_names = keras_names(build_model(spec.arch, **build))
        source_names[-1] = classifier_name
    classes = _source_classes(source, state, classifier_name)
    if classes is None:
        raise CheckpointError(
            f"the {source} weights have no classifier ({classifier_name!r} not found): convert a full model "
            "(include_top=True), not a feature extractor"
        )
    background = classes == 1001
    model_classes = classes - 1 if background else classes
    if num_classes is not None and num_classes != model_classes:
        raise CheckpointError(
            f"the {source} weights have {model_classes} classes, not {num_classes}; convert first, then "
            "load with num_classes=N and reset_classifier=True to fine-tune"
        )
    model = build_model(spec.arch, num_classes=model_classes, **build)

    converted: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for slot, name in zip(layer_slots(model), source_names, strict=True):
        target = modules[slot.module]
        try:
            if source == "keras":
                if name not in state:
                    raise KeyError(name)
                tensors = keras_tensors(state[name], slot, target)
            else:
                tensors = _torch_tensors(state, name, target)
        except KeyError as missing:
            raise CheckpointError(
                f"the {source} weights have no {missing} (needed for {slot.module}): is --arch {arch} right? "
                f"The weights' first names: {', '.join(list(state)[:4])}"
            ) from None
        except ValueError as error:  # wrong number of arrays for a layer
            raise CheckpointError(f"{source} layer {name} does not fit {slot.module}: {error}") from None
        if slot.part == "classifier" and background:
            tensors = _drop_background(tensors, model_classes)
        converted |= {f"{slot.module}.{k}": v for k, v in tensors.items()}
    # Tensors the source does not store (num_batches_tracked) keep the model's own values.
    converted = {k: converted.get(k, v) for k, v in model.state_dict().items()}
    check_state_dict(model, converted, f"the {source} weights ({arch})")
    model.load_state_dict(converted)
    model.preprocessing = preprocessing
    if class_names is not None:
        model.class_names = list(class_names)
    elif model_classes == 1000:
        model.class_names = list(imagenet_class_names())
    provenance |= {"arch": arch, "dropped_background_class": background}
    model.provenance = provenance
    return Converted(model, provenance)


def _convert_segmentation(
    state, source, spec, build, num_classes, class_names, provenance, arch
) -> Converted:
    """torchvision's LR-ASPP / DeepLabv3: the backbone's slots and the heads' keys renamed, checked, loaded."""
    if source != "torchvision":
        raise ValueError(f"segmentation weights convert from torchvision only, not {source}")
    deeplab = spec.arch.startswith(DEEPLAB_PREFIX)
    classifier = "classifier.4.weight" if deeplab else "classifier.low_classifier.weight"
    weight = state.get(classifier)
    if weight is None:
        raise CheckpointError(
            f"the torchvision weights have no {classifier}: is --arch {arch} (a {spec.arch} file) right?"
        )
    classes = int(weight.shape[0])
    if num_classes is not None and num_classes != classes:
        raise CheckpointError(f"the {source} weights have {classes} classes, not {num_classes}")
    options = (
        dict(build, aux_classifier=any(k.startswith("aux_classifier.") for k in state)) if deeplab else build
    )
    model = build_segmentation_model(spec.arch, num_classes=classes, **options)
    backbone = build_model(
        segmentation_backbone_name(spec.arch), num_classes=0, head_conv=False, output_stride=16, **build
    )
    names = segmentation_names(model, backbone)
    missing = [
        theirs
        for ours, theirs in names.items()
        if theirs not in state and not ours.endswith("num_batches_tracked")
    ]
    if missing:
        raise CheckpointError(
            f"the {source} weights have no {', '.join(missing[:3])}: is --arch {arch} right? "
            f"The weights' first names: {', '.join(list(state)[:4])}"
        )
    ours = model.state_dict()
    converted = {k: state.get(names.get(k, ""), v) for k, v in ours.items()}
    check_state_dict(model, converted, f"the {source} weights ({arch})")
    model.load_state_dict(converted)
    model.preprocessing = spec.preprocessing
    model.class_names = list(class_names) if class_names is not None else None
    provenance |= {"arch": arch, "dropped_background_class": False}
    model.provenance = provenance
    return Converted(model, provenance)


def _convert_detection(state, source, spec, build, num_classes, class_names, provenance, arch) -> Converted:
    """torchvision's SSDLite: backbone (split at C4), extra layers and heads renamed, checked, loaded."""
    if source != "torchvision":
        raise ValueError(f"detection weights convert from torchvision only, not {source}")
    first_head, first_extra = "head.classification_head.module_list.0.1.weight", "backbone.extra.0.0.0.weight"
    if first_head not in state or first_extra not in state:
        raise CheckpointError(
            f"the torchvision weights have no {first_head}: is --arch {arch} (an SSDLite file) right? "
            f"The weights' first names: {', '.join(list(state)[:4])}"
        )
    classes = int(state[first_head].shape[0]) // ANCHORS_PER_CELL
    if num_classes is not None and num_classes != classes:
        raise CheckpointError(f"the {source} weights have {classes} classes, not {num_classes}")
    # The reduced tail is whichever width of C5 the first extra layer takes.
    full = build_detection_model(spec.arch, num_classes=classes, **build)
    reduced = int(state[first_extra].shape[1]) != full.map_channels[1]
    model = build_detection_model(spec.arch, num_classes=classes, reduced_tail=reduced, **build)
    twin = build_model(
        segmentation_backbone_name(spec.arch.removeprefix(DETECTION_PREFIX)),
        num_classes=0,
        head_conv=False,
        reduced_tail=reduced,
        **build,
    )
    names = detection_names(model, twin)
    missing = [t for o, t in names.items() if t not in state and not o.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(
            f"the {source} weights have no {', '.join(missing[:3])}: is --arch {arch} right?"
        )
    converted = {k: state.get(names.get(k, ""), v) for k, v in model.state_dict().items()}
    check_state_dict(model, converted, f"the {source} weights ({arch})")
    model.load_state_dict(converted)
    model.preprocessing = spec.preprocessing
    model.class_names = list(class_names) if class_names is not None else None
    provenance |= {"arch": arch, "dropped_background_class": False, "reduced_tail": reduced}
    model.provenance = provenance
    return Converted(model, provenance)


def convert_file(
    src: str | os.PathLike, source: str, arch: str | None, out: str | os.PathLike, **kwargs
) -> Path:
    """Convert and save as a native checkpoint (the ``mobilenets convert`` command)."""
    from .checkpoint import save

    result = convert(src, source, arch, **kwargs)
    return save(result.model, out, provenance=result.provenance)
