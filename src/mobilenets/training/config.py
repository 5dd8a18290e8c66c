"""What a training run depends on: :class:`TrainConfig` and the recipes that fill it.

Training settings never change the inference graph (TF-Slim's rule): the checkpoint is the plain model.
The "paper" recipe is V3 Section 6.1's (RMSProp, step decay, EMA); see RECIPES for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_NAMES = ("classify", "segment", "detect")
OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("cosine", "step")
AMP_MODES = ("auto", "off", "bf16", "fp16")
# mobilenets.data.detection.BOX_AUGMENTS, spelled again here: importing it would load torchvision's v2
BOX_AUGMENTS = ("ssdlite", "ssd", "flip")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as RUN/config.json and reused by ``--resume``."""

    data: str  # image folder (class sub-folders, optional train/ and val/; masks for segment), or "demo"
    out: str  # run folder: checkpoints, metrics, curves, report
    model: str = "mobilenet_v3_small_100"
    weights: str | None = None  # "torchvision" / "keras" / "timm" / a checkpoint; None = from scratch
    recipe: str = "finetune"  # the preset the fields below were filled from
    # "classify" (class folders), "segment" (image + mask folders; lraspp_ / deeplabv3_ models) or "detect"
    # (COCO-format or VOC folders; ssdlite_ models)
    task: str = "classify"
    epochs: int = 10
    batch_size: int = 64  # global batch (split across DDP processes)
    image_size: int = 224  # training crop; evaluation resizes to image_size / crop ratio and centre-crops
    in_chans: int = 3  # 1: grayscale (images converted to luma), as microcontroller cameras deliver
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
    scale_range: tuple[float, float] = (0.5, 2.0)  # segmentation: random rescale before the crop
    eval_crop: float = (
        0.875  # evaluation centre crop / resize (1.0 = the whole image); from-scratch runs only
    )
    augment: str = "none"  # "none", "trivialaugment", "randaugment"
    random_erasing: float = 0.0  # probability
    # detection: "ssdlite" (IoU crop + flip), "ssd" (+ photometric, zoom out) or "flip"
    box_augment: str = "ssdlite"
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
            (self.task in TASK_NAMES, f"task must be one of {TASK_NAMES}, got {self.task!r}"),
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
            (self.in_chans in (1, 3), f"in_chans must be 1 (grayscale) or 3 (RGB), got {self.in_chans}"),
            (
                self.in_chans == 3 or (self.task == "classify" and not self.weights),
                "in_chans 1 (grayscale) trains classifiers from scratch only: ImageNet weights expect RGB, "
                "and the segmentation and detection pipelines read RGB",
            ),
            (
                self.box_augment in BOX_AUGMENTS,
                f"box_augment must be one of {BOX_AUGMENTS}, got {self.box_augment!r}",
            ),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (
                len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
                f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}",
            ),
        ]
        if task_of_model(self.model) != self.task:
            checks.append(
                (
                    False,
                    f"--task {self.task} does not fit --model {self.model}: segmentation needs an lraspp_<variant> "
                    "or deeplabv3_<variant> model, detection an ssdlite_<variant>, classification a plain variant",
                )
            )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def task_of_model(model: str) -> str:
    """The task a model name implies: segment (lraspp_, deeplabv3_), detect (ssdlite_) or classify."""
    if model.startswith(("lraspp_", "deeplabv3_")):
        return "segment"
    return "detect" if model.startswith("ssdlite_") else "classify"


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
