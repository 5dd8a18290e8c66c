"""The native checkpoint: safetensors tensors plus JSON metadata, written atomically, loaded with checks.

Metadata (all JSON strings, as safetensors stores ``dict[str, str]``):

- ``format``: ``mobilenets.checkpoint/1``
- ``config``: the architecture name and the options of ``create_model`` (width via the name, num_classes,
  in_chans, padding, bn_eps, bn_momentum, dropout, output_stride)
- ``class_names``: a list, or null
- ``preprocessing``: resize, crop, interpolation, mean, std (:class:`~mobilenets.preprocessing.Preprocessing`)
- ``provenance``: where the weights came from (source, file, sha256, converter), free-form

No pickle is ever read: safetensors holds plain tensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .preprocessing import Preprocessing

FORMAT = "mobilenets.checkpoint/1"


BEST, LAST = "best.safetensors", "last.safetensors"  # what a training run folder holds


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    provenance: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (made by ``create_model``) as a native checkpoint; returns the path.

    ``class_names`` / ``preprocessing`` default to the model's own (set when it was loaded or converted).
    """
    config = getattr(model, "config", None)
    if not config or not config.get("arch"):
        raise CheckpointError(
            "save() needs a model made by mobilenets.create_model (it records the architecture)"
        )
    class_names = class_names if class_names is not None else model.class_names
    if class_names is not None and len(class_names) != config["num_classes"]:
        raise CheckpointError(
            f"{len(class_names)} class names for a model with {config['num_classes']} classes"
        )
    preprocessing = preprocessing or model.preprocessing or Preprocessing()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config),
        "class_names": json.dumps(list(class_names) if class_names is not None else None),
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "provenance": json.dumps(provenance or {}),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and decoded metadata of a native checkpoint, or a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a mobilenets checkpoint (metadata format="
            f"{raw.get('format')!r}, expected {FORMAT!r}); convert foreign weights with `mobilenets convert`"
        )
    # Run checkpoints (last.safetensors) also carry the optimizer and EMA under train/ for resuming.
    tensors = {k: v for k, v in tensors.items() if not k.startswith("train/")}
    try:
        metadata = {key: json.loads(value) for key, value in raw.items() if key != "format"}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: corrupt metadata: {error}") from error
    return tensors, metadata


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, limit: int = 5) -> None:
    """Raise a CheckpointError naming the first missing, unexpected, mis-shaped and mis-typed tensors.

    A tensor's kind must match (floating weights stay floating: an int32 tensor would load as garbage
    weights through a silent cast); float16 / bfloat16 weights into float32 are fine."""
    reference = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: checkpoint {got[k]} vs model {expected[k]}"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    dtypes = [
        f"{k}: checkpoint {state[k].dtype} vs model {reference[k].dtype}"
        for k in expected
        if k in got
        and (state[k].dtype.is_floating_point, state[k].dtype.is_complex, state[k].dtype == torch.bool)
        != (
            reference[k].dtype.is_floating_point,
            reference[k].dtype.is_complex,
            reference[k].dtype == torch.bool,
        )
    ]
    if missing or unexpected or shapes or dtypes:
        arch = getattr(model, "arch", None) or type(model).__name__
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches, first: " + "; ".join(shapes[:limit]))
        if dtypes:
            parts.append(f"{len(dtypes)} dtype mismatches, first: " + "; ".join(dtypes[:limit]))
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:limit])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:limit])}")
        raise CheckpointError(f"{source} does not fit {arch}: " + " | ".join(parts))


# What a checkpoint's config may hold, with the type each value must have: anything else is refused
# before a model is built from it.
CONFIG_TYPES = {
    "arch": str,
    "num_classes": int,
    "in_chans": int,
    "dropout": float,
    "bn_eps": float,
    "bn_momentum": float,
    "padding": str,
    "output_stride": int,
    "head_conv": bool,
    "reduced_tail": bool,
    "atrous_style": str,
    "segmentation_channels": int,
    "aux_classifier": bool,
    "pool_kernel": list,  # [height, width]
    "pool_stride": list,
    "first_map_boxes": int,
}
MAX_CLASSES = 1_000_000
MAX_IN_CHANS = 64


def _checked_config(metadata: dict, path) -> dict:
    config = metadata.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("arch"), str):
        raise CheckpointError(f"{path}: metadata 'config' must be an object naming the architecture ('arch')")
    for key, value in config.items():
        kind = CONFIG_TYPES.get(key)
        if kind is None:
            raise CheckpointError(f"{path}: unknown config entry {key!r}; allowed: {', '.join(CONFIG_TYPES)}")
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, bool)
            if kind is bool
            else (isinstance(value, kind) and not isinstance(value, bool))
        )
        if kind is list:  # a (height, width) pair of small positive ints
            ok = (
                ok
                and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)
            )
            if not ok:
                raise CheckpointError(
                    f"{path}: config {key!r} must be [height, width] from 1 to 4096, got {value!r:.40}"
                )
        elif not ok:
            raise CheckpointError(f"{path}: config {key!r} must be {kind.__name__}, got {value!r:.40}")
    if not 0 <= config.get("num_classes", 1000) <= MAX_CLASSES:
        raise CheckpointError(
            f"{path}: config num_classes must be 0..{MAX_CLASSES:,}, got {config['num_classes']}"
        )
    if not 1 <= config.get("in_chans", 3) <= MAX_IN_CHANS:
        raise CheckpointError(f"{path}: config in_chans must be 1..{MAX_IN_CHANS}, got {config['in_chans']}")
    names = metadata.get("class_names")
    if names is not None and (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or len(names) != config.get("num_classes", 1000)
    ):
        raise CheckpointError(
            f"{path}: metadata class_names must be null or a list of {config.get('num_classes', 1000)} strings"
        )
    return dict(config)


def load_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, reset_classifier: bool = False
) -> nn.Module:
    """Load ``state`` into ``model``; with ``reset_classifier`` a classifier of another size is left fresh."""
    if reset_classifier:  # SSDLite's class heads are "classification."
        prefixes = getattr(model, "classifier_prefixes", ("classifier.",))
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
        state = {k: v for k, v in state.items() if not k.startswith(prefixes)} | fresh
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model


def load(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    reset_classifier: bool = False,
    **overrides,
):
    """Rebuild the model a native checkpoint describes and load it; returns ``(model, transform)``.

    ``num_classes`` different from the checkpoint's is an error unless ``reset_classifier=True``, which
    keeps the backbone and gives a freshly initialised classifier (fine-tuning). ``overrides`` go to
    ``create_model`` (for example ``dropout`` or ``memory_format``).
    """
    from ..nn.registry import build_from_config

    tensors, metadata = read(path)
    config = _checked_config(metadata, path)
    arch = config.pop("arch")
    saved_classes = config.get("num_classes", 1000)
    class_names = metadata.get("class_names")
    try:
        preprocessing = Preprocessing.from_dict(metadata.get("preprocessing") or {})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata preprocessing: {error}") from None
    # The tensors are checked against the architecture the metadata names before anything is allocated
    # from it: a model on the meta device has shapes and dtypes but no memory, so a small file claiming
    # a billion classes fails here, not in the allocator.
    with torch.device("meta"):
        skeleton = build_from_config(arch, **config)
    check_state_dict(skeleton, tensors, str(path))
    if num_classes is not None and num_classes != saved_classes:
        if not reset_classifier:
            raise CheckpointError(
                f"{path} has a {saved_classes}-class classifier, not {num_classes}; pass reset_classifier=True "
                f"(CLI: --reset-classifier) to keep the backbone and train a new {num_classes}-class classifier"
            )
        config["num_classes"], class_names = num_classes, None
    config.update(overrides)
    model = build_from_config(arch, **config)
    load_into(model, tensors, str(path), reset_classifier=reset_classifier)
    model.class_names = class_names
    model.preprocessing = preprocessing
    model.provenance = metadata.get("provenance") or {}
    return model, model.preprocessing.transform()


def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """A run folder means its best checkpoint (or last, if no best yet); a file is used as it is."""
    path = Path(source)
    if path.is_dir():
        for candidate in (path / BEST, path / LAST):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{path} has no {BEST} or {LAST}: is it a finished run folder?")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run folder or a .safetensors checkpoint)")
    return path
