"""A user who only runs exported models installs mobilenets with NumPy and nothing else:

    pip install --no-deps mobilenets numpy

This builds that environment for real: a fresh virtual environment, NumPy, and our wheel installed with
--no-deps (no torch, torchvision, safetensors, Pillow, onnx). `mobilenets run`, `mobilenets compile-c`
and `mobilenets.runtime` work there; every other command names the package it is missing, in one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import mobilenets.data.demo
from mobilenets.cli import main

from small_runs import shapes_classifier_onnx

PROJECT = Path(__file__).resolve().parents[2]
ALLOWED = {"numpy", "mobilenets", "pip", "setuptools"}  # pip / setuptools come with every venv


def _bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


@pytest.fixture(scope="module")
def numpy_only(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numpy-only")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # NumPy as it is installed here, copied with its metadata (the machines have no internet to fetch it).
    site = Path(np.__file__).parents[1]
    target = next((venv / "lib").glob("python3*/site-packages"))
    for entry in site.iterdir():
        if (
            entry.name == "numpy"
            or entry.name == "numpy.libs"
            or (entry.name.startswith("numpy-") and entry.name.endswith(".dist-info"))
        ):
            shutil.copytree(entry, target / entry.name)
    # The wheel is built from a copy of the sources, so that the build leaves nothing in the checkout.
    project = root / "project"
    shutil.copytree(
        PROJECT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, project / name)
    wheels = root / "wheels"
    build = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(project)]
    subprocess.run([sys.executable, "-m", *build], check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("mobilenets-*.whl"))
    with zipfile.ZipFile(wheel) as archive:  # package data travels: the C sources, the class names
        names = set(archive.namelist())
    for data in ("codegen/csrc/kernels.c", "codegen/csrc/main.c", "codegen/csrc/Makefile.template"):
        assert f"mobilenets/{data}" in names
    assert "mobilenets/weights/imagenet_classes.txt" in names
    subprocess.run(
        [_bin(venv, "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    listed = subprocess.run(
        [_bin(venv, "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert installed <= ALLOWED and {"numpy", "mobilenets"} <= installed, installed
    return venv


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numpy-only-model")
    model, path = shapes_classifier_onnx(folder / "shapes.onnx", resolution=64, seed=3)
    ppm = folder / "cross.ppm"
    mobilenets.data.demo.image("val", 1, size=64)[0].save(ppm)
    return model, path, ppm


def test_mobilenets_run_in_a_numpy_only_environment(numpy_only, shapes, capsys):
    """The same top-3 lines as in the full environment."""
    _, path, ppm = shapes
    result = subprocess.run(
        [_bin(numpy_only, "mobilenets"), "run", str(path), str(ppm), "--top-k", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert main(["run", str(path), str(ppm), "--top-k", "3"]) == 0
    assert result.stdout == capsys.readouterr().out
    assert len(result.stdout.splitlines()) == 3


def test_the_runtime_api_matches_pytorch_there(numpy_only, shapes, tmp_path):
    model, path, _ = shapes
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "x.npy", x.numpy())
    script = (
        "import sys, numpy as np, mobilenets.runtime as runtime\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, runtime.OnnxModel({str(path)!r})(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'PIL', 'safetensors')))\n"
    )
    result = subprocess.run(
        [_bin(numpy_only, "python"), "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    with torch.no_grad():
        expected = model(x).numpy()
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


@pytest.mark.usefixtures("c_toolchain")
def test_compile_c_in_a_numpy_only_environment(numpy_only, shapes, tmp_path):
    _, path, ppm = shapes
    out = tmp_path / "c"
    result = subprocess.run(
        [_bin(numpy_only, "mobilenets"), "compile-c", str(path), "-o", str(out), "--build"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    classified = subprocess.run([str(out / "model"), str(ppm)], capture_output=True, text=True, check=True)
    assert classified.stdout.split()[-1] in mobilenets.data.demo.CLASSES


@pytest.mark.parametrize(
    ("args", "package"),
    [
        (["profile"], "torch"),
        (["models"], "torch"),
        (["export", "mobilenet_v3_small_050", "-o", "x.onnx"], "torch"),
        (["train", "demo", "--out", "run"], "torch"),
        (
            ["convert", "w.pth", "--from", "torchvision", "--arch", "mobilenet_v2", "-o", "w.safetensors"],
            "torch",
        ),
        (["run", "MODEL", "picture.png"], "pillow"),
    ],
)
def test_other_commands_name_the_missing_package(numpy_only, shapes, tmp_path, args, package):
    _, path, _ = shapes
    args = [str(path) if a == "MODEL" else a for a in args]
    if "picture.png" in args:
        mobilenets.data.demo.image("val", 2, size=64)[0].save(tmp_path / "picture.png")
    result = subprocess.run(
        [_bin(numpy_only, "mobilenets"), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"pip install {package}" in result.stderr, result.stderr
