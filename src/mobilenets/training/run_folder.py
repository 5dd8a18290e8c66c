"""The run folder: its files, the resumable checkpoint, the metrics history, and what may be written.

A fresh run starts in a new or empty folder; a finished or interrupted one is resumed or, with
``--overwrite``, replaced; a folder holding anything else is never written into. Every file is written
atomically, so a run killed at any moment leaves the last complete state.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..weights.checkpoint import BEST, FORMAT, LAST, atomic_write
from .config import TrainConfig


class RunFiles:
    """The run folder's layout."""

    def __init__(self, out: str | os.PathLike):
        self.root = Path(out)
        self.config = self.root / "config.json"
        self.last = self.root / LAST
        self.best = self.root / BEST
        self.metrics = self.root / "metrics.jsonl"
        self.curves = self.root / "curves.png"
        self.report = self.root / "report.json"


def save_training_checkpoint(
    path: Path, model: nn.Module, deploy_state: dict, train_state: dict, meta: dict
) -> None:
    """One atomic safetensors file: the deployable weights (what ``mobilenets.load`` reads) plus, under
    ``train/``, the raw weights, optimizer and EMA tensors needed to resume; scalars go in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in deploy_state.items()}
    tensors |= {f"train/{k}": v.detach().cpu().contiguous() for k, v in train_state["tensors"].items()}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config),
        "class_names": json.dumps(model.class_names),
        "preprocessing": json.dumps(model.preprocessing.to_dict()),
        "provenance": json.dumps(meta.get("provenance", {})),
        "extra": json.dumps(meta.get("extra", {})),
        "train_state": json.dumps(train_state["scalars"]),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars[f"{index}/{name}"] = value
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["groups"]})


def read_training_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(deployable tensors, train/ tensors, train_state scalars)."""
    deploy, train = {}, {}
    with safe_open(str(path), "pt") as handle:
        scalars = json.loads((handle.metadata() or {}).get("train_state", "null"))
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if key.startswith("train/"):
                train[key.removeprefix("train/")] = handle.get_tensor(key)
            else:
                deploy[key] = handle.get_tensor(key)
    if scalars is None:
        raise ValueError(
            f"{path} has no training state to resume from (was it written by `mobilenets train`?)"
        )
    return deploy, train, scalars


def check_run_folder(out: str | os.PathLike, overwrite: bool = False) -> None:
    """A fresh run starts in a new or empty folder. A finished or interrupted run is resumed (``--resume``)
    or, with ``overwrite``, replaced; a folder holding anything else is never written into."""
    root = Path(out)
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"--out {root} exists and is not a folder")
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return
    shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
    if not is_run_folder(root):
        raise ValueError(
            f"--out {root} is not empty and is not a run folder (it holds {shown}); choose a new folder"
        )
    if not overwrite:
        raise ValueError(
            f"--out {root} holds an earlier run ({shown}): continue it with --resume {root}, choose a new "
            "folder, or pass --overwrite to replace it"
        )


# What a run folder holds: RunFiles' files, the demo's generated data and evaluate's default output.
RUN_ENTRIES = {Path(path).name for key, path in vars(RunFiles(".")).items() if key != "root"} | {
    "demo-data",
    "eval",
}


def is_run_folder(root: Path) -> bool:
    """A folder ``mobilenets train`` wrote: a config.json it can read, and nothing but its own entries
    (atomic-write leftovers included)."""
    try:
        TrainConfig(**json.loads((root / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return False
    return all(p.name in RUN_ENTRIES or p.name.startswith(".") for p in root.iterdir())


def read_history(path: Path, before_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] < before_epoch]


def write_history(path: Path, history: list[dict]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in history)))


def write_config(path: Path, config: TrainConfig) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(config), indent=2)))


def load_config(run: str | os.PathLike) -> TrainConfig:
    """The config a run was started with, its ``out`` set to where ``run`` is now: a run that was copied
    or moved resumes in place, never in (and over) the folder it was first written to."""
    path = RunFiles(run).config
    if not path.exists():
        raise FileNotFoundError(
            f"{run} is not a run folder (no config.json); start it with `mobilenets train`"
        )
    try:
        recorded = json.loads(path.read_text())
        return TrainConfig(**{**recorded, "out": str(run)})
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a readable run config: {error}") from None


def labelled_folder(data: str | os.PathLike, source: Path) -> Path:
    """The folder ``evaluate`` reads: ``data``, or for "demo" the demo data of the run ``source``."""
    if str(data) == "demo" and source.is_dir():
        return source / "demo-data"
    return Path(data)


def check_prediction_outputs(planned: list[Path], images: list[str], target, what: str) -> None:
    """Before predict writes anything: none of ``planned`` exists (nothing of the user's is replaced), and
    no two of ``images`` share a stem (their ``what`` would share one file)."""
    from collections import Counter

    existing = [p for p in planned if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists: predict writes into a new or empty --out folder")
    repeated = sorted(stem for stem, n in Counter(Path(p).stem for p in images).items() if n > 1)
    if repeated:
        raise ValueError(
            f"{target} holds several images named {repeated[0]}.*; their {what} would share one file"
        )
