"""Small models for tests: one trained for a few epochs on generated demo data (for tests that need real,
trained weights), and an untrained six-class classifier with calibrated BN, exported to ONNX."""

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
    from mobilenets.training import config_from_recipe, fit

    fit(config_from_recipe("scratch", data="demo", out=str(out), **SMALL_DEMO), progress=False)
    return out


def shapes_classifier_onnx(path: Path, resolution: int, seed: int):
    """V3-Small 0.5 with the demo's six class names and preprocessing in its metadata, BN calibrated so
    that the logits depend on the input, exported to ONNX at ``path``. Returns (model, onnx path)."""
    import torch

    import mobilenets
    import mobilenets.data.demo
    from mobilenets.deploy.export import export_onnx

    from parity import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(
        mobilenets.create_model("mobilenet_v3_small_050", num_classes=6).eval(),
        seed=seed,
        resolution=resolution,
    )
    model.class_names = list(mobilenets.data.demo.CLASSES)
    model.preprocessing = mobilenets.weights.preprocessing.Preprocessing(resize=resolution, crop=resolution)
    return model, export_onnx(model, path).path
