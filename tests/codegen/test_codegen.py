"""The C generator: builds with the system compiler (-O3 -march=native, and strict C99 -O2), matches ONNX
Runtime within 1e-4, classifies a PPM like the NumPy runner, and names what it cannot generate."""

import subprocess
from importlib import resources

import numpy as np
import pytest
import torch

import mobilenets
import mobilenets.data.demo
from mobilenets.cli import main
from mobilenets.codegen import CodegenError, build, generate
from mobilenets.codegen.writer import kernels
from mobilenets.deploy.export import export_onnx, probe_inputs
from mobilenets.runtime import OnnxModel

from instruction_sets import vector_flags
from parity import randomize_batchnorm
from small_runs import shapes_classifier_onnx

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("c_toolchain")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A microcontroller-class model: V3-Small 0.5 at 96 px, six classes, calibrated BN."""
    folder = tmp_path_factory.mktemp("codegen")
    _, path = shapes_classifier_onnx(folder / "small.onnx", resolution=96, seed=1)
    generated = generate(path, folder / "c")
    return path, generated


def _logits(binary, x, tmp_path):
    raw = tmp_path / "input.f32"
    x.astype(np.float32).tofile(raw)
    result = subprocess.run(
        [str(binary), "--raw", str(raw), "--logits"], capture_output=True, text=True, check=True
    )
    return np.array([float(v) for v in result.stdout.split()], np.float32)[None]


def _ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("target", ["model", "portable"])
def test_built_binary_matches_onnxruntime(small, target, tmp_path):
    """Both builds match ONNX Runtime, and -Wall (plus -pedantic for the portable one) stays quiet."""
    path, generated = small
    result = subprocess.run(
        ["make", "-s", "-B", target], cwd=generated.folder, capture_output=True, text=True, check=True
    )
    assert "warning" not in result.stderr, result.stderr[-2000:]
    binary = generated.folder / ("model_portable" if target == "portable" else "model")
    for seed in (1, 2):
        x = probe_inputs(1, 96, seed=seed).numpy()
        expected = _ort(path, x)
        got = _logits(binary, x, tmp_path)
        assert np.abs(expected - expected.mean()).max() > 1e-3
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_ppm_in_top_k_out_like_the_numpy_runner(small, tmp_path):
    path, generated = small
    binary = build(generated.folder)
    picture = tmp_path / "star.ppm"
    mobilenets.data.demo.image("val", 4, size=120)[0].save(picture)
    result = subprocess.run(
        [str(binary), str(picture), "--top-k", "3"], capture_output=True, text=True, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.split()[-1] in mobilenets.data.demo.CLASSES for line in lines)
    from mobilenets.runtime.image import preprocess, read_image

    runner = OnnxModel(path)
    logits = runner(preprocess(read_image(picture), runner.preprocessing, 96))[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert lines[0].split()[-1] == mobilenets.data.demo.CLASSES[int(probabilities.argmax())]
    assert float(lines[0].split()[0].rstrip("%")) == pytest.approx(100 * probabilities.max(), abs=0.05)
    bad = subprocess.run([str(binary), str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a binary PPM (P6)" in bad.stderr


def test_arena_is_planned_and_the_sources_are_self_contained(small):
    _, generated = small
    model_c = (generated.folder / "model.c").read_text()
    assert "malloc" not in model_c and "#include <stdint.h>" in model_c and "static float A[" in model_c
    largest_activation = 16 * 48 * 48 * 4  # stem output: 16 channels at 48x48
    assert largest_activation < generated.arena_bytes < 6 * largest_activation
    assert generated.classes == 6 and '"circle"' in model_c


@pytest.mark.parametrize(
    "flags",
    [[], ["-O2"], ["-O3", "-march=native"], ["-O2", "-pedantic", "-DMOBILENETS_NO_VECTOR_EXTENSIONS"]],
    ids=["plain", "O2", "native", "portable"],
)
def test_the_c_sources_compile_on_their_own(small, flags, tmp_path):
    """csrc/kernels.c and csrc/main.c are real C files: each compiles alone, warning-free, in every
    build mode; so does a generated model.c without -march (GCC's -Wpsabi about 32-byte vectors with
    AVX off is answered inside kernels.c), and model.c holds kernels.c's text unchanged."""
    _, generated = small
    csrc = resources.files("mobilenets.codegen").joinpath("csrc")
    folder = str(generated.folder)
    for source, include in ((csrc / "kernels.c", []), (csrc / "main.c", ["-I", folder])):
        _compile(str(source), include, flags, tmp_path)
    _compile(str(generated.folder / "model.c"), ["-I", folder], flags, tmp_path)
    assert kernels() in (generated.folder / "model.c").read_text()


def _compile(source: str, include: list[str], flags: list[str], tmp_path) -> None:
    command = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, *include, "-c", source]
    result = subprocess.run([*command, "-o", str(tmp_path / "out.o")], capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"


def test_unsupported_ops_name_the_node(tmp_path):
    pytest.importorskip("onnx")
    from small_runs import unsupported_op_onnx

    unsupported_op_onnx(tmp_path / "lrn.onnx")
    with pytest.raises(
        CodegenError, match=r"node 'norm1' \(LRN\): op LRN is not supported by the C generator"
    ):
        generate(tmp_path / "lrn.onnx", tmp_path / "out")


def test_cli_compile_c(small, tmp_path, capsys):
    path, _ = small
    assert main(["compile-c", str(path), "-o", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "activation arena" in printed and "6 classes" in printed
    assert {p.name for p in (tmp_path / "c").iterdir()} == {
        "model.c",
        "model.h",
        "main.c",
        "preprocess.h",
        "web.c",
        "Makefile",
    }


@pytest.mark.parametrize(
    "name, options, resolution",
    [
        # TF "same" padding (asymmetric pads), dilated depthwise layers, 8-wide weight panels (24, 40 ...)
        ("mobilenet_v2_035", dict(output_stride=8, padding="same"), 72),
        # 5x5 depthwise kernels, SE, h-swish, dilation in the last stage
        ("mobilenet_v3_large_035", dict(output_stride=16), 80),
        # an odd size: border-only columns, partial pixel tiles and 4-pixel blocks that do not divide rows
        ("mobilenet_v1_025", {}, 67),
    ],
)
def test_every_kernel_path_matches_onnxruntime(name, options, resolution, tmp_path):
    """The vector kernels have separate paths for image interiors, borders, panel widths and kernel sizes,
    and for each instruction set (8-float vectors with AVX2, 16 with AVX-512): each build this CPU runs."""
    torch.manual_seed(0)
    model = randomize_batchnorm(
        mobilenets.create_model(name, num_classes=10, **options).eval(), seed=2, resolution=resolution
    )
    path = export_onnx(model, tmp_path / "m.onnx", resolution=resolution).path
    generate(path, tmp_path / "c")
    x = probe_inputs(1, resolution, seed=3).numpy()
    expected = _ort(path, x)
    assert np.abs(expected - expected.mean()).max() > 1e-3
    for flags in vector_flags():
        cflags = " ".join((*flags, "-std=c99", "-ffp-contract=fast"))
        subprocess.run(["make", "-s", "clean"], cwd=tmp_path / "c", check=True)
        got = _logits(build(tmp_path / "c", cflags=cflags), x, tmp_path)
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4, cflags
