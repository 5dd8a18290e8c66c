"""The demo job: train a MobileNetV3-Small from scratch on the built-in demo dataset, then evaluate and
predict with it (``mobilenets demo``, after the numbers table)."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.demo import CLASSES

# The demo's training settings: the "scratch" recipe plus these. Gentle crops keep the whole shape in view
# (a 50% crop can cut a star into a triangle), and evaluation sees the whole image (eval_crop=1).
# Measured on 2 CPU cores: 16 epochs (1,200 steps) reached 95% on an AVX2 host but 86% on an AVX-512 one
# (float rounding differs by instruction set, and training from scratch amplifies it); 24 epochs (1,800
# steps, about 5.5 minutes) reach 94.8% there, a margin over the 90% target on both.
DEMO_TRAINING = dict(
    model="mobilenet_v3_small_100",
    epochs=24,
    batch_size=32,
    image_size=64,
    lr=3e-3,
    crop_scale=(0.85, 1.0),
    crop_ratio=(0.9, 1.1),
    eval_crop=1.0,
    cache_images=True,
    workers=0,
    demo_images={"train_per_class": 400, "val_per_class": 100, "size": 112},
)


def run_demo(out: str | os.PathLike = "runs/demo", epochs: int | None = None, quiet: bool = False) -> int:
    """The README's main job after the numbers: train, evaluate and predict on the demo dataset."""
    import time

    from .config import config_from_recipe
    from .evaluate import evaluate, predict
    from .loop import fit

    out = Path(out)
    settings = dict(DEMO_TRAINING, **({"epochs": epochs} if epochs else {}))
    print(f"\n== Training {settings['model']} on the demo dataset ({len(CLASSES)} classes, rendered) ==\n")
    started = time.perf_counter()
    config = config_from_recipe("scratch", data="demo", out=str(out), **settings)
    fit(config, progress=not quiet, overwrite=True)  # an earlier demo run is replaced, nothing else
    print(f"trained in {time.perf_counter() - started:.0f} s")
    print("\n== Evaluation on the validation split ==\n")
    evaluation = evaluate(out, "demo", out=out / "eval")
    verdict = "meets" if evaluation.top1 >= 0.9 else "is below"
    print(
        f"top-1 {evaluation.top1:.1%} ({verdict} the 90% target), top-5 {evaluation.top5:.1%}, "
        f"{evaluation.samples} images"
    )
    print("\n== A few predictions ==\n")
    val = out / "demo-data" / "val"
    samples = [val / name / sorted(os.listdir(val / name))[0] for name in CLASSES[:4]]
    for sample in samples:
        for item in predict(out, sample, top_k=3, workers=0):
            print(f"{sample.relative_to(out)}: " + ", ".join(f"{c} {p:.1%}" for c, p in item.top))
    print(
        f"\n== Files ==\n\n{out}/best.safetensors   the trained model (mobilenets.load / evaluate / predict / export)"
    )
    print(f"{out}/metrics.jsonl      per-epoch metrics;  {out}/curves.png  loss and accuracy curves")
    print(
        f"{out}/eval/confusion.png the confusion matrix;  {out}/eval/evaluation.json  per-class precision/recall"
    )
    print(f"{out}/demo-data/         the generated images (train/ and val/)")
    return 0 if evaluation.top1 >= 0.9 else 1
