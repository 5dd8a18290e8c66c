"""Small models for tests: one trained for a few epochs on generated demo data (for tests that need real,
trained weights), and an untrained six-class classifier with calibrated BN, exported to ONNX."""

from __future__ import annotations

from pathlib import Path

# Batch 8 and BN momentum 0.3: with fan-out initialisation a depthwise layer's outputs start ~20x
# smaller than BN's initial running variance assumes, and at batch 16 (42 steps) the running statistics
# had not caught up: in eval mode every layer shrank the signal and the logits were the same for every
# image (std 1e-8), which made the quantization tests' agreement checks unable to fail.
SMALL_DEMO = dict(
    model="mobilenet_v3_small_075",
    epochs=6,
    batch_size=8,
    bn_momentum=0.3,
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


def train_script(tmp_path: Path, base: dict, out: Path, **overrides) -> Path:
    """A Python file that trains the demo configuration ``base`` (with ``overrides``) into ``out``: for
    runs in a subprocess (killed, or under torch.distributed.run)."""
    import os
    import textwrap

    fields = dict(base, **overrides)
    script = tmp_path / f"train_{os.path.basename(out)}.py"
    script.write_text(
        textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        from mobilenets.training import config_from_recipe, fit
        fit(config_from_recipe("scratch", data="demo", out={str(out)!r}, **{fields!r}), progress=False)
    """)
    )
    return script


def trained_weights(run: Path) -> dict:
    """The deployable tensors of a run's last.safetensors (training state left out)."""
    from safetensors.torch import load_file

    from mobilenets.training import RunFiles

    tensors = load_file(str(RunFiles(run).last))
    return {k: v for k, v in tensors.items() if not k.startswith("train/")}


def kill_after(process, condition, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``condition()`` holds (it must still be running then)."""
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def resume_with_cli(run: Path):
    """`mobilenets train --resume RUN --quiet` in a subprocess, as a user resumes a killed run."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "mobilenets", "train", "--resume", str(run), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def calibration_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` PNGs of upsampled low-resolution colour noise (structure at every scale, unlike white
    noise) in ``folder``: calibration data for quantizing untrained models."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{index}.png")
    return folder


def random_int8_classifier(
    folder: Path, arch: str, resolution: int, in_chans: int, classes: list[str]
) -> Path:
    """``arch`` with BN calibrated so that the logits depend on the input, exported and quantized (QDQ,
    8-bit weights) by mobilenets into ``folder``. Returns the int8 file's path."""
    import torch

    import mobilenets
    from mobilenets.deploy.export import export_onnx
    from mobilenets.deploy.quantize import quantize

    from parity import randomize_batchnorm

    torch.manual_seed(0)
    model = mobilenets.create_model(arch, in_chans=in_chans, num_classes=len(classes)).eval()
    model = randomize_batchnorm(model, seed=1, resolution=resolution)
    model.class_names = classes
    export_onnx(model, folder / f"{arch}.onnx", resolution=resolution)
    images = calibration_images(folder / "calibration", 24, resolution + resolution // 6)
    return quantize(folder / f"{arch}.onnx", folder / f"{arch}.int8.onnx", images, reduce_range=False).path


def person_detector_int8(folder: Path) -> Path:
    """TFLite Micro's person-detection shape: MobileNet V1 0.25, 96x96 grayscale, 2 classes. Returns the
    int8 QDQ file's path."""
    return random_int8_classifier(folder, "mobilenet_v1_025", 96, 1, ["no person", "person"])


def unsupported_op_onnx(path: Path) -> Path:
    """A valid ONNX file the C generator cannot take: one LRN node named 'norm1' (1x3x8x8)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("LRN", ["x"], ["y"], name="norm1", size=3)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path
