import os
import shutil
import sys

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


# System tools the C tests need, and the Debian package that provides each.
TOOL_PACKAGES = {"cc": "gcc", "make": "make"}


@pytest.fixture
def c_toolchain():
    """cc and make: on a developer's machine without them the test is skipped; in CI (CI set, as .ci/run
    does) it fails, naming the package to install, so a missing tool can never pass silently."""
    missing = [tool for tool in TOOL_PACKAGES if shutil.which(tool) is None]
    if missing:
        message = (
            "needs "
            + ", ".join(missing)
            + ": apt-get install -y "
            + " ".join(TOOL_PACKAGES[t] for t in missing)
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
