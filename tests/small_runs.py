"""A small model trained for a few epochs on generated demo data: for tests that need real, trained weights."""

from __future__ import annotations

from pathlib import Path

SMALL_DEMO = dict(
    model="mobilenet_v3_small_075",
    epochs=6,
    batch_size=16,
    image_size=48,
    workers=0,
    eval_crop=1.0,
    crop_scale=(0.85, 1.0),
    demo_images={"train_per_class": 20, "val_per_class": 10, "size": 64},
)


def train_small_demo(out: Path) -> Path:
    """Train SMALL_DEMO into ``out`` (a run folder with best.safetensors and demo-data/)."""
    from mobilenets.train import config_from_recipe, fit

    fit(config_from_recipe("scratch", data="demo", out=str(out), **SMALL_DEMO), progress=False)
    return out
