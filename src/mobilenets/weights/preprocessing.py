"""How images become model inputs: resize, centre crop, scale, normalise. Stored with every checkpoint.

Using the wrong normalisation is the most common "low accuracy" report for ported MobileNets
(tensorflow/tensorflow#46105, #47619): torchvision's weights expect ImageNet mean/std, TF/Keras-trained
ones expect [-1, 1] (mean = std = 0.5 on [0, 1] pixels). So the choice travels with the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # x / 127.5 - 1: TF-Slim, Keras, timm tf_* weights
INCEPTION_STD = (0.5, 0.5, 0.5)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MAX_SIDE = 8192  # resize / crop bound: a checkpoint's metadata cannot ask for a bigger image


@dataclass(frozen=True)
class Preprocessing:
    """Eval-time preprocessing: resize the shorter side, centre-crop, scale to [0, 1], normalise."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
                raise ValueError(
                    f"{name} must be a whole number of pixels from 1 to {MAX_SIDE}, got {value!r:.40}"
                )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ValueError(f"mean and std must be finite, got {self.mean}, {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(
                f"mean and std need one value per channel and std > 0, got {self.mean}, {self.std}"
            )

    @classmethod
    def inception(cls, **overrides) -> Preprocessing:
        """[-1, 1] scaling, as TF-Slim, Keras and timm's tf_* ports expect."""
        return cls(**{"mean": INCEPTION_MEAN, "std": INCEPTION_STD, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing must be an object, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                values = known[key]
                if (
                    not isinstance(values, (list, tuple))
                    or not 1 <= len(values) <= 64
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                ):
                    raise ValueError(f"{key} must be a list of 1 to 64 numbers, got {values!r:.60}")
                known[key] = tuple(float(v) for v in values)
        return cls(**known)

    def for_channels(self, channels: int) -> Preprocessing:
        """The same steps for a ``channels``-channel input: a grayscale model (``in_chans=1``, TFLite
        Micro's person detector and MLPerf Tiny's Visual Wake Words read 96x96 grayscale) takes one
        mean and std, the average of RGB's when three are given."""
        if channels == len(self.mean):
            return self
        if channels == 1:
            average = lambda values: (sum(values) / len(values),)  # noqa: E731
            return Preprocessing(**{**self.to_dict(), "mean": average(self.mean), "std": average(self.std)})
        if len(self.mean) == 1:
            return Preprocessing(
                **{**self.to_dict(), "mean": self.mean * channels, "std": self.std * channels}
            )
        raise ValueError(f"preprocessing has {len(self.mean)} channels, the model takes {channels}")

    def transform(self):
        """A torchvision transforms.v2 pipeline that takes a PIL image or a uint8 / float tensor (C, H, W);
        with one mean and std the image is made grayscale first (ITU-R 601 luma, as PIL's "L")."""
        import torch
        from torchvision.transforms import InterpolationMode, v2

        gray = [v2.Grayscale(1)] if len(self.mean) == 1 else []
        return v2.Compose(
            [
                v2.ToImage(),
                *gray,
                v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation), antialias=True),
                v2.CenterCrop(self.crop),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the index order of every 1000-class checkpoint."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


# torchvision's SSDLite transform: [0, 1] images normalised with mean = std = 0.5, resized to 320x320.
DETECTION_PREPROCESSING = Preprocessing(resize=320, crop=320, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
