import os
import shutil
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("KERAS_BACKEND", "torch")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one intra-op thread each. More threads than cores makes oneDNN's
    # spinning threads fight (a 5x slowdown seen here), so each worker keeps to its core.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def variant_onnx(tmp_path_factory):
    """Each registered variant with random weights and calibrated BN (so its logits depend on the input),
    exported once at 64 px and shared by the export and runtime tests: name -> (model, ExportReport).
    Exports take seconds each (torch.export), so every variant is exported once per session, lazily."""
    import mobilenets
    from mobilenets.deploy.export import export_onnx

    from parity import randomize_batchnorm

    folder = tmp_path_factory.mktemp("variants")
    cache = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            model = randomize_batchnorm(mobilenets.create_model(name).eval(), seed=1, resolution=64)
            cache[name] = (model, export_onnx(model, folder / f"{name}.onnx", resolution=64))
        return cache[name]

    return get


# System tools the C tests need, and the Debian packages that provide each.
TOOL_PACKAGES = {"cc": "gcc", "make": "make"}
ARM_TOOL_PACKAGES = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}


def _require_tools(packages: dict[str, str]) -> None:
    """On a developer's machine without the tools the test is skipped; in CI (CI set, as .ci/run does)
    it fails, naming the packages to install, so a missing tool can never pass silently."""
    missing = [tool for tool in packages if shutil.which(tool) is None]
    if missing:
        message = (
            "needs " + ", ".join(missing) + ": apt-get install -y " + " ".join(packages[t] for t in missing)
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def c_toolchain():
    """cc and make (see _require_tools)."""
    _require_tools(TOOL_PACKAGES)


@pytest.fixture
def arm_toolchain():
    """cc and make, the Arm embedded GCC with newlib, and QEMU's Arm system emulator."""
    _require_tools({**TOOL_PACKAGES, **ARM_TOOL_PACKAGES})


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory):
    """A small trained model (a few epochs on demo data) exported to ONNX, with its data; shared by the
    quantization and int8 C tests."""
    from mobilenets.deploy.export import export_onnx

    from small_runs import train_small_demo

    out = train_small_demo(tmp_path_factory.mktemp("quant") / "run")
    export_onnx(out, out / "model.onnx")
    return out


def demo_validation_inputs(run) -> np.ndarray:
    """The demo run's validation images, preprocessed as its exported model (and quantize) expects."""
    from mobilenets.data.folders import list_images, load_image
    from mobilenets.deploy.export import read_metadata
    from mobilenets.deploy.quantize import _transform

    transform = _transform(read_metadata(run / "model.onnx"))
    return np.stack([transform(load_image(p)).numpy() for p in list_images(run / "demo-data" / "val")])
