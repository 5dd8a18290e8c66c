"""Train and fine-tune on a folder of images: recipes, EMA, mixed precision, checkpoints, exact resume, DDP.

Determinism is what makes resume exact: every epoch reseeds the sampler, the DataLoader workers and the
main process from (seed, epoch), and the end-of-epoch checkpoint holds everything else that changes
(weights, optimizer, EMA, step), written atomically in one file. So a run killed at any moment and
resumed from its last checkpoint finishes with the same weights as a run never interrupted.

Training settings never change the inference graph (TF-Slim's rule): the checkpoint is the plain model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data.folders import BadFileLog, collate_skip_bad
from ..weights.checkpoint import atomic_write, save
from ..weights.preprocessing import Preprocessing
from .config import TrainConfig
from .distributed import Dist, GlobalBatchSampler, all_agree, init_distributed, pick_device, replica_spread
from .optim import TrainStep, autocast_dtype, lr_at, make_optimizer
from .plots import plot_curves
from .run_folder import (
    RunFiles,
    check_run_folder,
    optimizer_from_flat,
    optimizer_to_flat,
    read_history,
    read_training_checkpoint,
    save_training_checkpoint,
    write_config,
    write_history,
)
from .task import TASKS, Task


@torch.no_grad()
def batch_predictions(
    model: nn.Module, loader, device: torch.device, bad: BadFileLog, channels_last: bool = True
):
    """(logits on the CPU, targets, indices) batch by batch for the decodable samples of ``loader``."""
    model.eval()
    for images, targets, index, bad_files in loader:
        bad.add(bad_files)
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = model(images)
        if isinstance(outputs, tuple):  # a detector's (class logits, box offsets)
            yield tuple(o.float().cpu() for o in outputs), targets, index
        else:
            yield outputs.float().cpu(), targets, index


def predict_loader(
    model: nn.Module, loader, device: torch.device, bad: BadFileLog, channels_last: bool = True
):
    """Logits and labels for every decodable sample of ``loader`` (bad files logged and skipped)."""
    logits, labels, indices = [], [], []
    for batch_logits, targets, index in batch_predictions(model, loader, device, bad, channels_last):
        logits.append(batch_logits)
        labels.append(targets)
        indices.append(index)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels), torch.cat(indices)


@dataclass
class FitResult:
    run: Path
    best_top1: float  # the best value of the task's best_metric (top-1 for classification)
    last_top1: float
    epochs_run: int
    bad_files: list[dict]
    history: list[dict] = dataclasses.field(default_factory=list)


@dataclass
class Run:
    """What the steps of one run share: set up by :func:`_start`, advanced epoch by epoch."""

    config: TrainConfig
    task: Task
    files: RunFiles
    device: torch.device
    world: Dist
    split: object
    model: nn.Module
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_step: TrainStep
    ema: nn.Module | None = None
    start_epoch: int = 0
    step: int = 0
    best: float = -1.0
    history: list[dict] = dataclasses.field(default_factory=list)
    bad: BadFileLog = dataclasses.field(default_factory=BadFileLog)

    @property
    def deployed(self) -> nn.Module:
        """The weights a checkpoint holds: the EMA's when it is on."""
        return self.ema.module if self.ema is not None else self.model


def _seed_epoch(config: TrainConfig, epoch: int) -> int:
    return config.seed * 100_003 + epoch


def _loader(
    dataset, batch_size, sampler, workers, generator, shuffle=False, drop_last=False, collate=collate_skip_bad
):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def _resolve_data(config: TrainConfig) -> Path:
    if config.data == "demo":
        from ..data.demo import write_dataset, write_detection_dataset, write_segmentation_dataset

        root = Path(config.out) / "demo-data"
        scenes = {"detect": write_detection_dataset, "segment": write_segmentation_dataset}.get(config.task)
        if scenes is not None:  # demo_images holds train / val counts for them (per class for classify)
            sizes = config.demo_images if "train" in config.demo_images else {}
            return scenes(root, **sizes, seed=config.seed)
        return write_dataset(root, **config.demo_images, seed=config.seed)
    return Path(config.data)


def _build_model(config: TrainConfig, num_classes: int, class_names: list[str]):
    from ..weights.factory import create_model

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
            in_chans=config.in_chans,
        )
        model.preprocessing = Preprocessing(
            resize=int(round(config.image_size / config.eval_crop)), crop=config.image_size
        ).for_channels(config.in_chans)
    if config.task == "detect":  # the whole image at the training size, normalised as the weights expect
        kept = model.preprocessing or Preprocessing()
        model.preprocessing = Preprocessing(
            resize=config.image_size, crop=config.image_size, mean=kept.mean, std=kept.std
        )
    model.class_names = list(class_names)
    if config.freeze_backbone:  # the classifier, or a segmentation model's heads, train alone
        trained = {
            "classify": ("classifier.",),
            "segment": ("head.", "aux."),
            "detect": ("extra.", "classification.", "regression."),
        }[config.task]
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(trained)
    return model


def _train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    model.train()
    if freeze_backbone:  # frozen BN statistics: the backbone computes exactly what it was trained to
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def fit(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    task: Task | None = None,
) -> FitResult:
    """Train ``config.model`` on ``config.data``; writes checkpoints, metrics and curves to ``config.out``.

    A fresh run (``resume=False``) needs a new or empty ``config.out``; ``overwrite`` lets it replace an
    earlier run there (never a folder holding other files). ``task`` defaults to classification."""
    run = _start(config, task or TASKS[config.task](), resume, overwrite, progress)
    for epoch in range(run.start_epoch, config.epochs):
        sums, seen, seconds = _train_epoch(run, epoch, progress)
        _share_between_processes(run)
        if run.world.main:
            record = _validate(run, epoch, sums, seen, seconds)
            _save_epoch(run, epoch, record, progress)
        if run.world.world > 1:
            dist.barrier()
    return _finish(run)


def _start(config: TrainConfig, task: Task, resume: bool, overwrite: bool, progress: bool) -> Run:
    """The folder, the device and processes, the data, the model and its optimizer; the last checkpoint
    when resuming."""
    if not resume and int(os.environ.get("RANK", "0")) == 0:
        check_run_folder(config.out, overwrite)
    files = RunFiles(config.out)
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    world = init_distributed(device)
    if config.batch_size % world.world:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly across {world.world} processes")
    if world.main:
        files.root.mkdir(parents=True, exist_ok=True)
        write_config(files.config, config)
    data_root = _resolve_data(config) if world.main else None
    if world.world > 1:
        dist.barrier()  # rank 0 may have generated the demo data
        data_root = _resolve_data(config) if data_root is None else data_root

    split = task.split(data_root, config)
    torch.manual_seed(config.seed)
    model = _build_model(config, len(split.classes), split.classes).to(device)
    task.attach(model, config)
    train_set, val_set = task.datasets(split, config, model.preprocessing)
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
    net = model
    if world.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    train_step = TrainStep(
        net,
        optimizer,
        task.criterion(config),
        amp_dtype,
        scaler,
        config.channels_last,
        config.grad_clip,
        device,
    )
    run = Run(
        config,
        task,
        files,
        device,
        world,
        split,
        model,
        train_set,
        val_set,
        optimizer,
        scaler,
        train_step,
        ema,
    )
    if world.main:
        run.bad.add(split.problems)  # what the scan skipped (a detection set's bad annotations)
    if resume and files.last.exists():
        _restore(run)
    if world.main:
        run.history = read_history(files.metrics, before_epoch=run.start_epoch)
        write_history(files.metrics, run.history)
    return run


def _restore(run: Run) -> None:
    """Weights, optimizer, EMA, step and best metric from the last end-of-epoch checkpoint."""
    deployed_tensors, train_tensors, scalars = read_training_checkpoint(run.files.last)
    raw = {k.removeprefix("model/"): v for k, v in train_tensors.items() if k.startswith("model/")}
    run.model.load_state_dict(raw or deployed_tensors)
    optimizer_from_flat(run.optimizer, train_tensors, scalars["optimizer"])
    if run.ema is not None:
        run.ema.load_state_dict(
            {f"module.{k}": v for k, v in deployed_tensors.items()}
            | {"n_averaged": train_tensors["ema/n_averaged"]}
        )
    run.start_epoch, run.step, run.best = scalars["epoch"] + 1, scalars["step"], scalars["best_top1"]
    if scalars.get("scaler"):
        run.scaler.load_state_dict(scalars["scaler"])


def _train_epoch(run: Run, epoch: int, progress: bool) -> tuple[dict[str, float], int, float]:
    """One pass over this process's share of the training set; returns the task's metric sums, the
    images seen and the seconds taken."""
    from tqdm import tqdm

    config, world = run.config, run.world
    seed = _seed_epoch(config, epoch)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = GlobalBatchSampler(len(run.train_set), config.batch_size, seed, world.rank, world.world)
    per_rank_batch = config.batch_size // world.world
    loader = _loader(
        run.train_set,
        per_rank_batch,
        sampler,
        config.workers,
        generator,
        drop_last=True,
        collate=run.task.collate,
    )
    steps_per_epoch = max(1, len(run.split.train) // config.batch_size)
    _train_mode(run.model, config.freeze_backbone)
    sums: dict[str, float] = {"loss": 0.0}
    seen, started = 0, time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=not (progress and world.main),
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
    for images, targets, _, bad_files in bar:
        run.bad.add(bad_files)
        # A batch whose bad files left fewer than 2 images cannot train BatchNorm (its 1x1 maps have one
        # value per channel): skip it, and in DDP skip it on every process together, or the others would
        # wait forever in the gradient all-reduce.
        if not all_agree(images is not None and len(images) >= 2, world, run.device):
            continue
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(config, run.step, steps_per_epoch)
        outputs, loss = run.train_step(images, targets)
        targets = targets.to(run.device)
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        run.step += 1
        seen += len(targets)
        sums["loss"] += float(loss) * len(targets)
        for name, value in run.task.batch_sums(outputs, targets).items():
            sums[name] = sums.get(name, 0.0) + value
        elapsed = time.perf_counter() - started
        bar.set_postfix(
            **{name: f"{value / seen:.3f}" for name, value in sums.items()},
            img_s=f"{seen * world.world / max(elapsed, 1e-9):.0f}",
            lr=f"{run.optimizer.param_groups[0]['lr']:.2e}",
        )
    bar.close()
    return sums, seen, time.perf_counter() - started


def _share_between_processes(run: Run) -> None:
    """DDP syncs gradients, not BN running statistics: rank 0's are taken everywhere. Each process met
    the bad files of its own shard: the report lists every process's."""
    if run.world.world == 1:
        return
    for buffer in run.model.buffers():
        dist.broadcast(buffer, 0)
    found: list = [None] * run.world.world
    dist.all_gather_object(found, run.bad.files)
    for files_of_rank in found:
        run.bad.merge(files_of_rank)


def _validate(run: Run, epoch: int, sums: dict[str, float], seen: int, seconds: float) -> dict:
    """The epoch's record: training metrics (per image) and the task's validation metrics."""
    config = run.config
    loader = _loader(
        run.val_set,
        config.batch_size // run.world.world,
        None,
        config.workers,
        None,
        collate=run.task.collate,
    )
    validator = run.task.validator(config)
    for outputs, targets, _ in batch_predictions(
        run.deployed, loader, run.device, run.bad, config.channels_last
    ):
        validator.add(outputs, targets)
    metrics = validator.result()
    return {
        "epoch": epoch,
        **{f"train_{name}": value / max(seen, 1) for name, value in sums.items()},
        **{f"val_{name}": value for name, value in metrics.items()},
        "lr": run.optimizer.param_groups[0]["lr"],
        "images_per_s": seen * run.world.world / max(seconds, 1e-9),
        "bad_files": len(run.bad),
    }


def _save_epoch(run: Run, epoch: int, record: dict, progress: bool) -> None:
    """Metrics first (resume trims what it re-runs), then best.safetensors if the epoch improved, then the
    resumable last.safetensors, then the curves."""
    from tqdm import tqdm

    metric = record[f"val_{run.task.best_metric}"]
    run.history.append(record)
    write_history(run.files.metrics, run.history)
    deployed = run.deployed
    deployed.class_names, deployed.preprocessing = run.model.class_names, run.model.preprocessing
    deployed.arch = run.model.arch
    improved = metric > run.best
    run.best = max(run.best, metric)
    opt_tensors, opt_meta = optimizer_to_flat(run.optimizer)
    train_tensors = dict(opt_tensors)
    if run.ema is not None:  # the deployable weights are the EMA's; keep the raw ones and its count
        train_tensors |= {f"model/{k}": v for k, v in run.model.state_dict().items()}
        train_tensors["ema/n_averaged"] = run.ema.n_averaged
    scalars = {
        "epoch": epoch,
        "step": run.step,
        "best_top1": run.best,  # the task's best_metric; the key keeps older runs resumable
        "optimizer": opt_meta,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
    }
    validation = {k: v for k, v in record.items() if k.startswith("val_") and k != "val_loss"}
    meta = {
        "provenance": {"source": "mobilenets train", "data": str(run.config.data), "epoch": epoch},
        "extra": validation,
    }
    deploy_state = deployed.state_dict()
    if improved:
        save(deployed, run.files.best, provenance=meta["provenance"], extra=meta["extra"])
    save_training_checkpoint(
        run.files.last, deployed, deploy_state, {"tensors": train_tensors, "scalars": scalars}, meta
    )
    plot_curves(run.history, run.files.curves, run.task.best_metric)
    if progress:
        shown = "  ".join(
            f"{key.replace('_', ' ')} {value:.3f}"
            for key, value in record.items()
            if key.startswith(("train_", "val_"))
        )
        tqdm.write(
            f"epoch {epoch + 1}/{run.config.epochs}  {shown}  {record['images_per_s']:.0f} img/s"
            + ("  (best)" if improved else "")
        )


def _finish(run: Run) -> FitResult:
    """report.json (rank 0) and the result; the process group is closed."""
    replicas = replica_spread(run.model, run.world)
    last_key = f"val_{run.task.best_metric}"
    result = FitResult(
        run.files.root,
        run.best,
        run.history[-1][last_key] if run.history else float("nan"),
        len(run.history),
        run.bad.report(),
        run.history,
    )
    if run.world.main:
        report = {
            "task": run.task.name,
            "best_top1": run.best,
            "epochs": len(run.history),
            "classes": run.split.classes,
            "split": run.split.source,
            "train_samples": len(run.split.train),
            "val_samples": len(run.split.val),
            "bad_files": run.bad.report(),
            "checkpoints": {"last": str(run.files.last), "best": str(run.files.best)},
            "processes": run.world.world,
            "replica_max_abs_diff": replicas,
        }
        atomic_write(run.files.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    if run.world.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
