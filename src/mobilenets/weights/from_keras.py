"""Keras Applications' MobileNet names for our slots, and their weight files read with h5py alone.

Files: .h5 as Keras Applications ships them (legacy ``layer_names`` / ``weight_names``), and .keras /
.weights.h5 as Keras 3 saves them (``layers/<name>/vars/<i>``), nested models included. Only the file's
own data is read (anchors section 3.2: layouts; the hardening issue: links and external storage).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError
from .slots import Slot, layer_slots


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


def keras_tensors(arrays: list[np.ndarray], slot: Slot, target: nn.Module) -> dict[str, torch.Tensor]:
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


def fine_tuned_keras_head(layers: dict, expected: list[str], probe: nn.Module) -> tuple[str, bool]:
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
