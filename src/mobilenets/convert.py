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
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blocks import DepthwiseSeparable
from .checkpoint import CheckpointError, check_state_dict
from .layers import ConvBNAct
from .preprocessing import Preprocessing, imagenet_class_names
from .zoo import create_model, get_variant

SOURCES = ("torchvision", "timm", "keras")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass(frozen=True)
class SourceArch:
    """A source library's model name, the registry name it maps to, and the options its weights need."""

    arch: str
    options: dict = field(default_factory=dict)
    preprocessing: Preprocessing = Preprocessing()


_TF = {"padding": "same", "bn_eps": 1e-3}
_TIMM = {"bn_eps": 1e-5}
_TIMM_PRE = Preprocessing(interpolation="bicubic")

SOURCE_ARCHS: dict[str, dict[str, SourceArch]] = {
    "torchvision": {
        "mobilenet_v2": SourceArch("mobilenet_v2_100", {"bn_eps": 1e-5}),
        "mobilenet_v3_large": SourceArch("mobilenet_v3_large_100", {"bn_eps": 1e-3}),
        "mobilenet_v3_small": SourceArch("mobilenet_v3_small_100", {"bn_eps": 1e-3}),
    },
    "timm": {
        "mobilenetv1_100": SourceArch(
            "mobilenet_v1_100", _TIMM, Preprocessing.inception(interpolation="bicubic")
        ),
        **{
            f"mobilenetv2_{w}": SourceArch(f"mobilenet_v2_{w}", _TIMM, _TIMM_PRE)
            for w in ("035", "050", "075", "100", "140")
        },
        **{
            f"mobilenetv3_{s}_{w}": SourceArch(f"mobilenet_v3_{s}_{w}", _TIMM, _TIMM_PRE)
            for s, w in (("large", "075"), ("large", "100"), ("small", "075"), ("small", "100"))
        },
        **{
            f"tf_mobilenetv3_{s}_{w}": SourceArch(f"mobilenet_v3_{s}_{w}", _TF, Preprocessing.inception())
            for s in ("large", "small")
            for w in ("075", "100", "minimal_100")
        },
    },
}
# timm's mobilenetv3_small_050 / large_050 keep a 16-channel stem below width 0.75 ("fix_stem"); ours
# scales it as TF-Slim does (8), so those checkpoints have no registry twin.
_NO_TWIN = {
    "mobilenetv3_small_050": "mobilenet_v3_small_050",
    "mobilenetv3_large_050": "mobilenet_v3_large_050",
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
    if arch in _NO_TWIN:
        raise ValueError(
            f"timm's {arch} keeps a 16-channel stem below width 0.75; our {_NO_TWIN[arch]} follows TF-Slim "
            "(8 channels), so its weights do not fit any registered model"
        )
    get_variant(arch)  # our registry name, or a ValueError listing what is allowed
    if source == "keras":
        return SourceArch(arch, _TF, Preprocessing.inception())
    family_options = {"torchvision": {}, "timm": _TIMM}[source]
    return SourceArch(arch, family_options, _TIMM_PRE if source == "timm" else Preprocessing())


# ---------------------------------------------------------------------------------------------------
# Our layers in forward order
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One weighted layer of our model: module path, what it is, and which part of which block."""

    module: str
    kind: str  # "conv" | "bn" | "linear"
    part: str  # "stem", "expand", "depthwise", "se_reduce", "se_expand", "project", "pointwise", "last", "head", "classifier"
    block: int | None = None
    role: str = ""  # "conv" or "bn" within a conv-BN pair


def layer_slots(model: nn.Module) -> list[Slot]:
    slots: list[Slot] = []

    def conv_bn(path: str, part: str, block: int | None = None) -> None:
        slots.append(Slot(f"{path}.conv", "conv", part, block, "conv"))
        slots.append(Slot(f"{path}.bn", "bn", part, block, "bn"))

    conv_bn("stem", "stem")
    for i, block in enumerate(model.blocks):
        if isinstance(block, DepthwiseSeparable):
            conv_bn(f"blocks.{i}.depthwise", "depthwise", i)
            conv_bn(f"blocks.{i}.pointwise", "pointwise", i)
            continue
        if isinstance(block.expand, ConvBNAct):
            conv_bn(f"blocks.{i}.expand", "expand", i)
        conv_bn(f"blocks.{i}.depthwise", "depthwise", i)
        if not isinstance(block.se, nn.Identity):
            slots.append(Slot(f"blocks.{i}.se.conv_reduce", "conv", "se_reduce", i))
            slots.append(Slot(f"blocks.{i}.se.conv_expand", "conv", "se_expand", i))
        conv_bn(f"blocks.{i}.project", "project", i)
    if isinstance(model.last_conv, ConvBNAct):
        conv_bn("last_conv", "last")
    if isinstance(model.head, nn.Linear):
        slots.append(Slot("head", "linear", "head"))
    if isinstance(model.classifier, nn.Linear):
        slots.append(Slot("classifier", "linear", "classifier"))
    return slots


def _has_expand(model: nn.Module, i: int) -> bool:
    return not isinstance(model.blocks[i], DepthwiseSeparable) and isinstance(
        model.blocks[i].expand, ConvBNAct
    )


def _has_se(model: nn.Module, i: int) -> bool:
    return not isinstance(model.blocks[i], DepthwiseSeparable) and not isinstance(
        model.blocks[i].se, nn.Identity
    )


# ---------------------------------------------------------------------------------------------------
# Source names for each slot
# ---------------------------------------------------------------------------------------------------


def torchvision_names(model: nn.Module) -> list[str]:
    """torchvision MobileNetV2 / V3 module paths, slot by slot."""
    v3 = isinstance(model.head, nn.Linear)
    last = len(model.blocks) + 1
    names = []
    for slot in layer_slots(model):
        sub = {"conv": "0", "bn": "1"}.get(slot.role, "")
        if slot.part == "stem":
            names.append(f"features.0.{sub}")
        elif slot.part == "last":
            names.append(f"features.{last}.{sub}")
        elif slot.part == "head":
            names.append("classifier.0")
        elif slot.part == "classifier":
            names.append("classifier.3" if v3 else "classifier.1")
        else:
            i = slot.block
            order = [p for p, present in (("expand", _has_expand(model, i)), ("depthwise", True)) if present]
            if v3:
                order += ["se"] if _has_se(model, i) else []
                order += ["project"]
                j = order.index("se" if slot.part.startswith("se_") else slot.part)
                leaf = {"se_reduce": "fc1", "se_expand": "fc2"}.get(slot.part, sub)
                names.append(f"features.{i + 1}.block.{j}.{leaf}")
            elif slot.part == "project":  # V2: the projection's conv and BN are separate entries
                j = len(order)
                names.append(f"features.{i + 1}.conv.{j if slot.role == 'conv' else j + 1}")
            else:
                names.append(f"features.{i + 1}.conv.{order.index(slot.part)}.{sub}")
    return names


def timm_names(model: nn.Module, source_keys: list[str]) -> list[str]:
    """timm EfficientNet / MobileNetV3 module paths; block prefixes ("blocks.s.j") are read from the source."""
    prefixes = sorted(
        {m.group(1) for k in source_keys if (m := re.match(r"(blocks\.\d+\.\d+)\.", k))},
        key=lambda p: tuple(int(n) for n in p.split(".")[1:]),
    )
    v3_last_in_blocks = any(k.startswith(f"{prefixes[-1]}.conv.") for k in source_keys) if prefixes else False
    block_prefixes = prefixes[:-1] if v3_last_in_blocks else prefixes
    if len(block_prefixes) != len(model.blocks):
        raise CheckpointError(
            f"the timm weights have {len(block_prefixes)} blocks, {model.arch} has {len(model.blocks)}: wrong --arch?"
        )
    names = []
    for slot in layer_slots(model):
        if slot.part == "stem":
            names.append("conv_stem" if slot.role == "conv" else "bn1")
        elif slot.part == "last":
            if v3_last_in_blocks:
                names.append(f"{prefixes[-1]}.{'conv' if slot.role == 'conv' else 'bn1'}")
            else:
                names.append("conv_head" if slot.role == "conv" else "bn2")
        elif slot.part in ("head", "classifier"):
            names.append("conv_head" if slot.part == "head" else "classifier")
        else:
            prefix = block_prefixes[slot.block]
            separable = not _has_expand(model, slot.block)  # timm's DepthwiseSeparableConv
            table = (
                {
                    "depthwise": ("conv_dw", "bn1"),
                    "project": ("conv_pw", "bn2"),
                    "pointwise": ("conv_pw", "bn2"),
                }
                if separable
                else {
                    "expand": ("conv_pw", "bn1"),
                    "depthwise": ("conv_dw", "bn2"),
                    "project": ("conv_pwl", "bn3"),
                }
            )
            if slot.part == "se_reduce":
                names.append(f"{prefix}.se.conv_reduce")
            elif slot.part == "se_expand":
                names.append(f"{prefix}.se.conv_expand")
            else:
                conv, bn = table[slot.part]
                names.append(f"{prefix}.{conv if slot.role == 'conv' else bn}")
    return names


def keras_names(model: nn.Module) -> list[str]:
    """Keras Applications layer names (MobileNet, MobileNetV2, MobileNetV3), slot by slot."""
    family = model.variant.family
    names = []
    for slot in layer_slots(model):
        bn = slot.role == "bn"
        if family == "mobilenet_v1":
            if slot.part == "stem":
                names.append("conv1_bn" if bn else "conv1")
            elif slot.part == "classifier":
                names.append("conv_preds")
            else:
                kind = "dw" if slot.part == "depthwise" else "pw"
                names.append(f"conv_{kind}_{slot.block + 1}" + ("_bn" if bn else ""))
        elif family == "mobilenet_v2":
            if slot.part == "stem":
                names.append("bn_Conv1" if bn else "Conv1")
            elif slot.part == "last":
                names.append("Conv_1_bn" if bn else "Conv_1")
            elif slot.part == "classifier":
                names.append("predictions")
            else:
                prefix = "expanded_conv" if slot.block == 0 else f"block_{slot.block}"
                names.append(f"{prefix}_{slot.part}" + ("_BN" if bn else ""))
        else:
            if slot.part == "stem":
                names.append("conv_bn" if bn else "conv")
            elif slot.part == "last":
                names.append("conv_1_bn" if bn else "conv_1")
            elif slot.part in ("head", "classifier"):
                names.append("conv_2" if slot.part == "head" else "logits")
            else:
                prefix = "expanded_conv" if slot.block == 0 else f"expanded_conv_{slot.block}"
                part = {"se_reduce": "squeeze_excite_conv", "se_expand": "squeeze_excite_conv_1"}.get(
                    slot.part, slot.part
                )
                names.append(f"{prefix}_{part}" + ("_bn" if bn else ""))
    return names


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------


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


MAX_KERAS_WEIGHTS_BYTES = 1 << 30  # inflated from a .keras zip at most (the largest MobileNet is ~25 MB)


def _keras_weights_bytes(path: Path) -> bytes:
    """model.weights.h5 from a .keras zip, inflated in a bounded read: a zip bomb (or an entry whose
    declared size lies) stops at the limit instead of exhausting memory."""
    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            raise CheckpointError(f"{path} is a zip but has no model.weights.h5: not a .keras file")
        with archive.open("model.weights.h5") as entry:
            data = entry.read(MAX_KERAS_WEIGHTS_BYTES + 1)
    if len(data) > MAX_KERAS_WEIGHTS_BYTES:
        raise CheckpointError(
            f"{path}: model.weights.h5 inflates to more than {MAX_KERAS_WEIGHTS_BYTES >> 20} MiB; refused"
        )
    return data


def _member(group, name: str, path: Path, kind):
    """``group[name]``, refusing what would read outside the file: external links (another HDF5 file),
    datasets with external storage (raw bytes of any local file) and virtual datasets (other files'
    datasets). Datasets are read whole, so their size is bounded first."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        raise CheckpointError(f"{path}: {group.name}/{name} is missing")
    if isinstance(link, h5py.ExternalLink):
        raise CheckpointError(
            f"{path}: {group.name}/{name} is an external link to {link.filename!r}; links to other files are refused"
        )
    member = group[name]
    if not isinstance(member, kind):
        raise CheckpointError(f"{path}: {member.name} is not a {kind.__name__.lower()}")
    if kind is h5py.Dataset:
        if member.external:
            raise CheckpointError(
                f"{path}: dataset {member.name} keeps its data in external storage "
                f"({member.external[0][0]!r}); refused: a weights file must hold its own data"
            )
        if member.is_virtual:
            raise CheckpointError(
                f"{path}: dataset {member.name} is a virtual dataset (data from other files); refused"
            )
        if member.dtype.kind not in "fiu" or member.size * member.dtype.itemsize > MAX_KERAS_WEIGHTS_BYTES:
            raise CheckpointError(
                f"{path}: dataset {member.name} ({member.dtype}, {member.shape}) is not a weight array"
            )
    return member


def _text_attr(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays (Keras order: kernel, bias / gamma, beta, moving mean, moving variance).

    Only the file's own data is read: external links, external storage and virtual datasets are refused
    (each could pull another local file into the weights)."""
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if path.suffix == ".keras" or zipfile.is_zipfile(path):
            handle = h5py.File(io.BytesIO(_keras_weights_bytes(path)), "r")
        else:
            handle = h5py.File(path, "r")
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path} is not a readable Keras weights file (truncated or corrupt?): {error}"
        ) from error

    def read(group, name):
        return np.asarray(_member(group, name, path, h5py.Dataset))

    with handle:
        root = _member(handle, "model_weights", path, h5py.Group) if "model_weights" in handle else handle
        if "layer_names" in root.attrs:  # legacy h5: Keras Applications' files, model.save("x.h5")
            layers: dict[str, list[np.ndarray]] = {}
            for name in (_text_attr(n) for n in root.attrs["layer_names"]):
                group = _member(root, name, path, h5py.Group)
                for weight in (_text_attr(w) for w in group.attrs.get("weight_names", [])):
                    # "Conv1/kernel:0" in its own layer's group (names may hold "/" themselves, as in
                    # "expanded_conv/depthwise"); a nested model (a base inside a fine-tuned Functional
                    # model) lists every one of its layers' weights in its one group.
                    own = weight.startswith(name + "/") or "/" not in weight
                    layer = name if own else weight.rsplit("/", 1)[0]
                    layers.setdefault(layer, []).append(read(group, weight))
            return layers
        if "layers" in root:  # Keras 3: layers/<auto name>/vars/<i>, the layer's name in vars.attrs["name"]
            layers = {}

            def walk(container) -> None:  # nested models keep their own layers/ inside their group
                for key in container:
                    group = _member(container, key, path, h5py.Group)
                    if "vars" in group and len(group["vars"]):
                        variables = _member(group, "vars", path, h5py.Group)
                        name = _text_attr(variables.attrs.get("name", key))
                        layers[name] = [read(variables, str(i)) for i in range(len(variables))]
                    if "layers" in group:
                        walk(_member(group, "layers", path, h5py.Group))

            walk(_member(root, "layers", path, h5py.Group))
            return layers
    raise CheckpointError(
        f"{path}: no Keras weights found (neither legacy 'layer_names' nor Keras 3 'layers')"
    )


# ---------------------------------------------------------------------------------------------------
# Tensor layouts
# ---------------------------------------------------------------------------------------------------


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


def _keras_tensors(arrays: list[np.ndarray], slot: Slot, target: nn.Module) -> dict[str, torch.Tensor]:
    tensors = [torch.from_numpy(np.ascontiguousarray(a)).float() for a in arrays]
    if slot.kind == "bn":
        gamma, beta, mean, var = tensors
        return {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
    kernel, *bias = tensors
    if slot.kind == "linear":
        # Dense (I, O) or a 1x1 conv (1, 1, I, O) used as a classifier / head.
        weight = kernel.reshape(-1, kernel.shape[-1]).T
    elif target.groups > 1:  # DepthwiseConv2D (kh, kw, C, multiplier) -> (C * multiplier, 1, kh, kw)
        kh, kw, channels, multiplier = kernel.shape
        weight = kernel.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
    else:  # Conv2D (kh, kw, I, O) -> (O, I, kh, kw)
        weight = kernel.permute(3, 2, 0, 1)
    return {"weight": weight.contiguous(), **({"bias": bias[0]} if bias else {})}


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

    probe = create_model(spec.arch, **build)
    names = {"torchvision": torchvision_names, "keras": keras_names}.get(source)
    source_names = names(probe) if names else timm_names(probe, list(state))
    classifier_name = source_names[-1]
    if source == "keras" and classifier_name not in state:
        classifier_name, head_conv = _fine_tuned_keras_head(state, source_names, probe)
        if not head_conv:  # a V3 base saved with include_top=False: no conv_2 before the user's Dense
            build["head_conv"] = False
            source_names = keras_names(create_model(spec.arch, **build))
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
    model = create_model(spec.arch, num_classes=model_classes, **build)

    converted: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for slot, name in zip(layer_slots(model), source_names, strict=True):
        target = modules[slot.module]
        try:
            if source == "keras":
                if name not in state:
                    raise KeyError(name)
                tensors = _keras_tensors(state[name], slot, target)
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


def _fine_tuned_keras_head(layers: dict, expected: list[str], probe: nn.Module) -> tuple[str, bool]:
    """The classifier of a model fine-tuned the usual Keras way (the Applications base with
    include_top=False, then pooling, dropout and a Dense of the user's own name): the one Dense layer
    outside the base whose kernel takes the pooled features, and whether the V3 head conv (conv_2) is
    kept. A V3 base with include_top=False ends at conv_1, so that Dense takes the last conv's channels
    and the model is built with ``head_conv=False``. Our classifier's name when there is no such Dense."""
    base = set(expected)
    widths = {probe.head_hidden_size: True}
    if probe.head_conv and probe.head_hidden_size != probe.num_features and "conv_2" not in layers:
        widths[probe.num_features] = False
    dense = {
        name: arrays[0].shape[0]
        for name, arrays in layers.items()
        if name not in base and len(arrays) in (1, 2) and arrays[0].ndim == 2
    }
    heads = [(name, widths[width]) for name, width in dense.items() if width in widths]
    if len(heads) == 1:
        extra = [
            name for name, arrays in layers.items() if arrays and name not in base and name != heads[0][0]
        ]
        if extra:  # converting the first Dense alone would silently drop what follows it
            raise CheckpointError(
                f"the Keras model has weighted layers outside the MobileNet base besides its classifier "
                f"{heads[0][0]!r}: {', '.join(extra[:4])}; only pooling, dropout and one Dense can follow "
                "the base"
            )
        return heads[0]
    if len(heads) > 1:
        raise CheckpointError(
            f"the Keras model has {len(heads)} Dense layers that could be its classifier "
            f"({', '.join(name for name, _ in heads)}); convert a model with one Dense head"
        )
    if dense:
        name, width = next(iter(dense.items()))
        raise CheckpointError(
            f"the Keras model's classifier {name!r} takes {width} features, but this architecture's "
            f"classifier takes {' or '.join(map(str, widths))}: is --arch right?"
        )
    return expected[-1], True


def convert_file(
    src: str | os.PathLike, source: str, arch: str | None, out: str | os.PathLike, **kwargs
) -> Path:
    """Convert and save as a native checkpoint (the ``mobilenets convert`` command)."""
    from .checkpoint import save

    result = convert(src, source, arch, **kwargs)
    return save(result.model, out, provenance=result.provenance)
