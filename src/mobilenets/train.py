"""Train and fine-tune on a folder of images: recipes, EMA, mixed precision, checkpoints, exact resume, DDP.

Determinism is what makes resume exact: every epoch reseeds the sampler, the DataLoader workers and the
main process from (seed, epoch), and the end-of-epoch checkpoint holds everything else that changes
(weights, optimizer, EMA, step), written atomically in one file. So a run killed at any moment and
resumed from its last checkpoint finishes with the same weights as a run never interrupted.

Training settings never change the inference graph (TF-Slim's rule): the checkpoint is the plain model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .checkpoint import FORMAT, atomic_write
from .data import BadFileLog, FolderDataset, collate_skip_bad, eval_transform, split_folder, train_transform
from .preprocessing import Preprocessing

OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("cosine", "step")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as RUN/config.json and reused by ``--resume``."""

    data: str  # image folder (class sub-folders, optional train/ and val/), or "demo"
    out: str  # run folder: checkpoints, metrics, curves, report
    model: str = "mobilenet_v3_small_100"
    weights: str | None = None  # "torchvision" / "keras" / "timm" / a checkpoint; None = from scratch
    recipe: str = "finetune"  # the preset the fields below were filled from
    epochs: int = 10
    batch_size: int = 64  # global batch (split across DDP processes)
    image_size: int = 224  # training crop; evaluation resizes to image_size / crop ratio and centre-crops
    optimizer: str = "adamw"
    lr: float = 1e-3  # peak learning rate for the global batch
    weight_decay: float = 0.05
    momentum: float = 0.9  # RMSProp / SGD
    schedule: str = "cosine"  # "cosine" to zero, or "step": x decay_rate every decay_epochs
    decay_rate: float = 0.973
    decay_epochs: float = 2.4
    warmup_epochs: float = 1.0  # linear warm-up from 1% of lr
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off
    amp: str = "auto"  # mixed precision: auto = on for CUDA (bf16 if supported, else fp16), off on CPU
    channels_last: bool = True
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    freeze_backbone: bool = False  # train the classifier only (BN statistics frozen too)
    dropout: float = 0.2
    bn_momentum: float = 0.1  # BN running-statistics momentum while training (V3's 0.01 suits long runs only)
    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range
    crop_ratio: tuple[float, float] = (0.75, 1.3333)  # RandomResizedCrop aspect-ratio range
    eval_crop: float = (
        0.875  # evaluation centre crop / resize (1.0 = the whole image); from-scratch runs only
    )
    augment: str = "none"  # "none", "trivialaugment", "randaugment"
    random_erasing: float = 0.0  # probability
    val_fraction: float = 0.2  # used when the folder has no train/ and val/
    seed: int = 0
    workers: int = 2
    cache_images: bool = False  # decode the dataset once into memory (small datasets on few cores)
    device: str = "auto"
    demo_images: dict = field(
        default_factory=lambda: {"train_per_class": 300, "val_per_class": 75, "size": 112}
    )

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.image_size >= 32,
                f"image_size must be >= 32 (the network downsamples by 32), got {self.image_size}",
            ),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# Presets; an explicit field always wins over its recipe.
RECIPES: dict[str, dict] = {
    # V3 Section 6.1 / timm's reproduction: RMSProp (TF-style eps), step decay 0.973 every 2.4 epochs,
    # EMA 0.9999, weight decay 1e-5, lr 0.064 for batch 1024 scaled to the batch here.
    "paper": dict(
        optimizer="rmsprop",
        lr=0.016,
        weight_decay=1e-5,
        momentum=0.9,
        schedule="step",
        decay_rate=0.973,
        decay_epochs=2.4,
        warmup_epochs=3.0,
        label_smoothing=0.1,
        ema_decay=0.9999,
        augment="randaugment",
        random_erasing=0.2,
        dropout=0.2,
        bn_momentum=0.01,
        crop_scale=(0.08, 1.0),
    ),
    # Fine-tuning pretrained weights: AdamW, short warm-up, cosine decay.
    "finetune": dict(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        ema_decay=0.0,
        augment="trivialaugment",
        random_erasing=0.0,
        dropout=0.2,
    ),
    # A small dataset from scratch in few epochs (the demo): AdamW with a higher peak rate.
    "scratch": dict(
        optimizer="adamw",
        weight_decay=0.02,
        schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        ema_decay=0.0,
        augment="none",
        random_erasing=0.0,
        dropout=0.1,
        crop_scale=(0.5, 1.0),
        lr=3e-3,
    ),
}


def config_from_recipe(recipe: str, **fields) -> TrainConfig:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(sorted(RECIPES))}")
    explicit = {k: v for k, v in fields.items() if v is not None}
    return TrainConfig(**{**RECIPES[recipe], **explicit, "recipe": recipe})


# ---------------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule: a pure function of the step, so resume needs only the step count
# ---------------------------------------------------------------------------------------------------


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    epoch = step / steps_per_epoch
    if epoch < config.warmup_epochs:
        return config.lr * (0.01 + 0.99 * epoch / config.warmup_epochs)
    if config.schedule == "step":
        return config.lr * config.decay_rate ** math.floor(
            (epoch - config.warmup_epochs) / config.decay_epochs
        )
    total = config.epochs - config.warmup_epochs
    progress = min(1.0, (epoch - config.warmup_epochs) / max(total, 1e-8))
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """No weight decay on BN and biases (they set scale and offset, not capacity)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, foreach=True)
    if config.optimizer == "rmsprop":
        # TF's RMSProp adds eps inside the square root: eps 1e-3 there ~ sqrt(1e-3) here (timm's rmsproptf).
        return torch.optim.RMSprop(
            groups, lr=config.lr, alpha=0.9, eps=0.0316, momentum=config.momentum, foreach=True
        )
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True, foreach=True)


# ---------------------------------------------------------------------------------------------------
# Run files
# ---------------------------------------------------------------------------------------------------


class RunFiles:
    """The run folder's layout."""

    def __init__(self, out: str | os.PathLike):
        self.root = Path(out)
        self.config = self.root / "config.json"
        self.last = self.root / "last.safetensors"
        self.best = self.root / "best.safetensors"
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


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_loader(
    model: nn.Module, loader, device: torch.device, bad: BadFileLog, channels_last: bool = True
):
    """Logits and labels for every decodable sample of ``loader`` (bad files logged and skipped)."""
    model.eval()
    logits, labels, indices = [], [], []
    for images, targets, index, bad_files in loader:
        bad.add(bad_files)
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits.append(model(images).float().cpu())
        labels.append(targets)
        indices.append(index)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels), torch.cat(indices)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    return float((logits.topk(k, 1).indices == labels[:, None]).any(1).float().mean())


class TrainStep:
    """One optimisation step as ``fit`` runs it: channels-last input, autocast, scaled backward, clipping."""

    def __init__(
        self,
        net: nn.Module,
        optimizer,
        criterion,
        amp_dtype=None,
        scaler=None,
        channels_last=True,
        grad_clip: float = 0.0,
        device: torch.device | None = None,
    ):
        self.net, self.optimizer, self.criterion = net, optimizer, criterion
        self.amp_dtype, self.channels_last, self.grad_clip = amp_dtype, channels_last, grad_clip
        self.device = device or torch.device("cpu")
        self.scaler = scaler or torch.amp.GradScaler(self.device.type, enabled=False)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.net(images)
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logits.detach(), loss.detach()


# ---------------------------------------------------------------------------------------------------
# fit()
# ---------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    run: Path
    best_top1: float
    last_top1: float
    epochs_run: int
    bad_files: list[dict]
    history: list[dict] = dataclasses.field(default_factory=list)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of a seeded per-epoch permutation.

    Global batch t is ``perm[t*B:(t+1)*B]`` whatever the number of processes; rank r takes its r-th
    slice. So a run on N processes sees exactly the batches a single process would (only BatchNorm's
    per-process statistics differ), and the order is a function of (seed, epoch) alone.
    """

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world
        self.per_rank = global_batch // world

    def __len__(self) -> int:
        return (self.size // self.global_batch) * self.per_rank

    def __iter__(self):
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
        for start in range(0, self.size - self.global_batch + 1, self.global_batch):
            share = start + self.rank * self.per_rank
            yield from perm[share : share + self.per_rank]


def _seed_epoch(config: TrainConfig, epoch: int) -> int:
    return config.seed * 100_003 + epoch


def _loader(dataset, batch_size, sampler, workers, generator, shuffle=False, drop_last=False):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def _resolve_data(config: TrainConfig) -> Path:
    if config.data == "demo":
        from .demo import write_dataset

        root = Path(config.out) / "demo-data"
        return write_dataset(root, **config.demo_images, seed=config.seed)
    return Path(config.data)


def _build_model(config: TrainConfig, num_classes: int, class_names: list[str]):
    from .zoo import create_model

    memory_format = "channels_last" if config.channels_last else "contiguous"
    if config.weights:
        model = create_model(
            config.model,
            weights=config.weights,
            num_classes=num_classes,
            reset_classifier=True,
            dropout=config.dropout,
            memory_format=memory_format,
            bn_momentum=config.bn_momentum,
        )
    else:
        model = create_model(
            config.model,
            num_classes=num_classes,
            dropout=config.dropout,
            memory_format=memory_format,
            bn_momentum=config.bn_momentum,
        )
        model.preprocessing = Preprocessing(
            resize=int(round(config.image_size / config.eval_crop)), crop=config.image_size
        )
    model.class_names = list(class_names)
    if config.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("classifier.")
    return model


def _train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    model.train()
    if freeze_backbone:  # frozen BN statistics: the backbone computes exactly what it was trained to
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


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


def fit(
    config: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> FitResult:
    """Train ``config.model`` on ``config.data``; writes checkpoints, metrics and curves to ``config.out``.

    A fresh run (``resume=False``) needs a new or empty ``config.out``; ``overwrite`` lets it replace an
    earlier run there (never a folder holding other files)."""
    from tqdm import tqdm

    if not resume and int(os.environ.get("RANK", "0")) == 0:
        check_run_folder(config.out, overwrite)
    files = RunFiles(config.out)
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    world = init_distributed(device)
    if config.batch_size % world.world:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly across {world.world} processes")
    if world.main:
        files.root.mkdir(parents=True, exist_ok=True)
        atomic_write(files.config, lambda tmp: tmp.write_text(json.dumps(asdict(config), indent=2)))
    data_root = _resolve_data(config) if world.main else None
    if world.world > 1:
        dist.barrier()  # rank 0 may have generated the demo data
        data_root = _resolve_data(config) if data_root is None else data_root

    split = split_folder(data_root, config.val_fraction, config.seed)
    torch.manual_seed(config.seed)
    model = _build_model(config, len(split.classes), split.classes).to(device)
    preprocessing = model.preprocessing
    train_set = FolderDataset(
        split.train,
        train_transform(
            config.image_size,
            preprocessing,
            config.augment,
            config.random_erasing,
            tuple(config.crop_scale),
            tuple(config.crop_ratio),
        ),
    )
    val_set = FolderDataset(split.val, eval_transform(config.image_size, preprocessing))
    if config.cache_images:
        train_set.preload(progress and world.main)
        val_set.preload(progress and world.main)

    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    optimizer = make_optimizer(config, model)
    amp_dtype = autocast_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, step, best, history = 0, 0, -1.0, []
    if resume and files.last.exists():
        deployed_tensors, train_tensors, scalars = read_training_checkpoint(files.last)
        raw = {k.removeprefix("model/"): v for k, v in train_tensors.items() if k.startswith("model/")}
        model.load_state_dict(raw or deployed_tensors)
        optimizer_from_flat(optimizer, train_tensors, scalars["optimizer"])
        if ema is not None:
            ema.load_state_dict(
                {f"module.{k}": v for k, v in deployed_tensors.items()}
                | {"n_averaged": train_tensors["ema/n_averaged"]}
            )
        start_epoch, step, best = scalars["epoch"] + 1, scalars["step"], scalars["best_top1"]
        if scalars.get("scaler"):
            scaler.load_state_dict(scalars["scaler"])
    if world.main:
        history = _read_history(files.metrics, before_epoch=start_epoch)
        _write_history(files.metrics, history)

    net = model
    if world.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    per_rank_batch = config.batch_size // world.world
    train_step = TrainStep(
        net, optimizer, criterion, amp_dtype, scaler, config.channels_last, config.grad_clip, device
    )
    bad = BadFileLog()
    steps_per_epoch = max(1, len(split.train) // config.batch_size)

    for epoch in range(start_epoch, config.epochs):
        seed = _seed_epoch(config, epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        sampler = GlobalBatchSampler(len(train_set), config.batch_size, seed, world.rank, world.world)
        loader = _loader(train_set, per_rank_batch, sampler, config.workers, generator, drop_last=True)
        _train_mode(model, config.freeze_backbone)
        seen, correct, loss_sum, started = 0, 0, 0.0, time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (progress and world.main),
            unit="batch",
            leave=False,
            dynamic_ncols=True,
        )
        for images, labels, _, bad_files in bar:
            bad.add(bad_files)
            # A batch whose bad files left fewer than 2 images cannot train BatchNorm (its 1x1 maps have
            # one value per channel): skip it, and in DDP skip it on every process together, or the
            # others would wait forever in the gradient all-reduce.
            usable = images is not None and len(images) >= 2
            if world.world > 1:
                flag = torch.tensor([int(usable)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                usable = bool(flag.item())
            if not usable:
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, steps_per_epoch)
            logits, loss = train_step(images, labels)
            labels = labels.to(device)
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            seen += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += float(loss) * len(labels)
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}",
                acc=f"{correct / seen:.3f}",
                img_s=f"{seen * world.world / max(elapsed, 1e-9):.0f}",
                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
            )
        bar.close()
        train_time = time.perf_counter() - started
        if world.world > 1:  # DDP syncs gradients, not BN running statistics: take rank 0's everywhere
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
            # Each process met the bad files of its own shard: the report lists every process's.
            found: list = [None] * world.world
            dist.all_gather_object(found, bad.files)
            for files_of_rank in found:
                bad.merge(files_of_rank)

        if world.main:
            deployed = ema.module if ema is not None else model
            val_loader = _loader(val_set, per_rank_batch, None, config.workers, None)
            val_logits, val_labels, _ = predict_loader(
                deployed, val_loader, device, bad, config.channels_last
            )
            val_loss = float(criterion(val_logits, val_labels)) if len(val_labels) else float("nan")
            top1, top5 = accuracy(val_logits, val_labels, 1), accuracy(val_logits, val_labels, 5)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                "train_top1": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_top1": top1,
                "val_top5": top5,
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": seen * world.world / max(train_time, 1e-9),
                "bad_files": len(bad),
            }
            history.append(record)
            _write_history(files.metrics, history)  # before the checkpoint: resume trims what it re-runs
            deployed.class_names, deployed.preprocessing = model.class_names, model.preprocessing
            deployed.arch = model.arch
            improved = top1 > best
            best = max(best, top1)
            opt_tensors, opt_meta = optimizer_to_flat(optimizer)
            train_tensors = dict(opt_tensors)
            if ema is not None:  # the deployable weights are the EMA's; keep the raw ones and its count
                train_tensors |= {f"model/{k}": v for k, v in model.state_dict().items()}
                train_tensors["ema/n_averaged"] = ema.n_averaged
            scalars = {
                "epoch": epoch,
                "step": step,
                "best_top1": best,
                "optimizer": opt_meta,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            }
            meta = {
                "provenance": {"source": "mobilenets train", "data": str(config.data), "epoch": epoch},
                "extra": {"val_top1": top1, "val_top5": top5},
            }
            deploy_state = deployed.state_dict()
            if improved:
                from .checkpoint import save

                save(deployed, files.best, provenance=meta["provenance"], extra=meta["extra"])
            save_training_checkpoint(
                files.last, deployed, deploy_state, {"tensors": train_tensors, "scalars": scalars}, meta
            )
            _plot_curves(history, files.curves)
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.3f} "
                    f"acc {record['train_top1']:.3f}  val loss {val_loss:.3f} top-1 {top1:.3f} top-5 {top5:.3f}  "
                    f"{record['images_per_s']:.0f} img/s" + ("  (best)" if improved else "")
                )
        if world.world > 1:
            dist.barrier()

    replicas = _replica_spread(model, world)
    result = FitResult(
        files.root,
        best,
        history[-1]["val_top1"] if history else float("nan"),
        len(history),
        bad.report(),
        history,
    )
    if world.main:
        report = {
            "best_top1": best,
            "epochs": len(history),
            "classes": split.classes,
            "split": split.source,
            "train_samples": len(split.train),
            "val_samples": len(split.val),
            "bad_files": bad.report(),
            "checkpoints": {"last": str(files.last), "best": str(files.best)},
            "processes": world.world,
            "replica_max_abs_diff": replicas,
        }
        atomic_write(files.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    if world.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _replica_spread(model: nn.Module, world: Dist) -> float:
    """Largest difference between any process's weights and rank 0's (0.0 when DDP kept them in sync)."""
    if world.world == 1:
        return 0.0
    flat = torch.cat(
        [p.detach().float().flatten() for p in model.state_dict().values()]
    )  # on the model device (nccl)
    reference = flat.clone()
    dist.broadcast(reference, 0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


def _read_history(path: Path, before_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] < before_epoch]


def _write_history(path: Path, history: list[dict]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in history)))


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1")
    ax_acc.plot(epochs, [r["val_top1"] for r in history], "o-", label="val top-1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with contextlib.suppress(OSError):
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
