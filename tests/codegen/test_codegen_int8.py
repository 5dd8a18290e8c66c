"""The int8 C generator: integer-only C from the QDQ files `mobilenets quantize` writes, equal to ONNX
Runtime running the same file, and the same program on a simulated Cortex-M4 and Cortex-M55 (QEMU)."""

import ctypes
import re
import subprocess
from importlib import resources

import numpy as np
import pytest

from mobilenets.cli import main
from mobilenets.codegen import CodegenError, generate
from mobilenets.codegen.int8plan import plan_int8, quantize_multiplier
from mobilenets.codegen.writer import build_shared_library

from instruction_sets import BUILDS
from small_runs import (
    calibration_images,
    person_detector_int8,
    random_int8_classifier,
    shapes_classifier_onnx,
)

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def random_int8(tmp_path_factory):
    """V3-Small 0.5 (h-swish, squeeze-excite, residual adds) with calibrated random BN at 64 px, quantized
    on upsampled colour noise."""
    from mobilenets.deploy.quantize import quantize

    folder = tmp_path_factory.mktemp("int8")
    _, path = shapes_classifier_onnx(folder / "v3.onnx", resolution=64, seed=3)
    images = calibration_images(folder / "calibration", 24, 80)
    return quantize(path, folder / "v3.int8.onnx", images).path


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    return person_detector_int8(tmp_path_factory.mktemp("person"))


def test_quantize_multiplier_is_tflites():
    """real = multiplier / 2**31 * 2**shift with the multiplier in [2**30, 2**31), as TFLite's
    QuantizeMultiplier; zero and underflowing scales give a zero multiplier."""
    assert quantize_multiplier(0.5, "x") == (1 << 30, 0)
    assert quantize_multiplier(0.75, "x") == (3 << 29, 0)
    assert quantize_multiplier(3.0, "x") == (3 << 29, 2)
    for real in (1e-4, 0.0123, 0.999999999, 7.5):
        multiplier, shift = quantize_multiplier(real, "x")
        assert 1 << 30 <= multiplier < 1 << 31
        assert multiplier / 2**31 * 2.0**shift == pytest.approx(real, rel=2**-30)
    assert quantize_multiplier(0.0, "x") == (0, 0) and quantize_multiplier(1e-12, "x") == (0, 0)
    with pytest.raises(CodegenError, match="node n: requantization scale"):
        quantize_multiplier(float("nan"), "node n")


def onnxruntime_int8_tensors(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every QuantizeLinear output of ONNX Runtime's run of ``path`` on ``x``, as the C lays them out
    (int8, NHWC, flat)."""
    import onnx

    model = onnx.load(str(path))
    types = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(node.output[0], types[node.input[2]], None)
            )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    tensors = {}
    for name, value in zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True):
        if value.dtype == np.uint8:
            value = (value.astype(np.int16) - 128).astype(np.int8)
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        tensors[name] = np.ascontiguousarray(value).ravel()
    return tensors


def traced_library(onnx_path, folder, flags=("-O2",)):
    """The generated C built with -DMODEL_TRACE (and ``flags``) as a shared library."""
    generate(onnx_path, folder)
    subprocess.run(
        [
            "cc",
            *flags,
            "-shared",
            "-fPIC",
            "-DMODEL_TRACE",
            "-o",
            "libtraced.so",
            "model.c",
            "model_io.c",
            "-lm",
        ],
        cwd=folder,
        check=True,
    )
    library = ctypes.CDLL(str(folder / "libtraced.so"))
    library.model_run_int8.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return library


def steps_against_onnxruntime(path, plan, library, resolution: int, channels: int) -> tuple[float, int, int]:
    """Runs the traced C on four inputs, comparing each step's int8 output with ONNX Runtime's and then
    writing ONNX Runtime's values in (so that one difference cannot spread): (fraction equal, largest
    difference, values compared)."""
    from parity import structured_inputs

    compared = equal = 0
    worst = 0
    seen = []

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int8), ctypes.c_int)
    def trace(step, name, values, count):
        nonlocal compared, equal, worst
        ours = np.ctypeslib.as_array(values, (count,))
        theirs = reference[name.decode()]
        difference = np.abs(ours.astype(np.int16) - theirs)
        compared, equal, worst = (
            compared + count,
            equal + int((difference == 0).sum()),
            max(worst, int(difference.max())),
        )
        ours[:] = theirs
        seen.append(step)

    ctypes.c_void_p.in_dll(library, "model_trace").value = ctypes.cast(trace, ctypes.c_void_p).value
    logits = np.zeros(plan.output_size, np.int8)
    for seed in range(4):
        x = structured_inputs(1, resolution, seed=seed).numpy()[:, :channels]
        reference = onnxruntime_int8_tensors(path, x)
        input_name = next(name for name in reference if name.startswith("input"))
        nhwc = reference[input_name].reshape(1, resolution, resolution, channels)
        nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))  # kept alive while the C reads it
        library.model_run_int8(nchw.ctypes.data, logits.ctypes.data)
    assert seen == list(range(len(plan.steps))) * 4
    return equal / compared, worst, compared


@pytest.fixture(scope="module")
def v2_int8(tmp_path_factory):
    return random_int8_classifier(tmp_path_factory.mktemp("v2"), "mobilenet_v2_035", 64, 3, list("abcd"))


@pytest.mark.parametrize("flags", [BUILDS[0], BUILDS[-1]])
def test_steps_that_write_over_their_input_equal_onnxruntime(v2_int8, tmp_path, c_toolchain, flags):
    """V2's depthwise steps (stride 1 and 2, through a ring of rows) and 1x1 steps (expansions wider than
    their input, made back to front; projections narrower, front to back) write over their input where
    that lowers the RAM, and still give ONNX Runtime's values step by step."""
    plan, _ = plan_int8(v2_int8)
    in_place = [(kind, d) for kind, ins, out, d in plan.steps if plan.tensors[out].alias == ins[0]]
    assert {d["sh"] for kind, d in in_place if kind == "depthwise"} == {1, 2}
    assert any(kind == "conv1x1" and d["m"] > d["c"] and d["ho"] > 1 for kind, d in in_place)
    assert any(kind == "conv1x1" and d["m"] < d["c"] and d["ho"] > 1 for kind, d in in_place)
    library = traced_library(v2_int8, tmp_path, flags)
    fraction, worst, _ = steps_against_onnxruntime(v2_int8, plan, library, 64, 3)
    assert fraction >= 0.999 and worst <= 1, (fraction, worst)


@pytest.mark.parametrize("flags", BUILDS)
def test_every_integer_step_equals_onnxruntime(random_int8, tmp_path, c_toolchain, flags):
    """Each step of the C (conv, depthwise, 1x1, h-swish and gate tables, SE multiply, residual add, mean,
    classifier), given ONNX Runtime's int8 input to it, gives ONNX Runtime's int8 output: exactly for
    99.9% of the values, never more than one step away (the rest are the cases where ONNX Runtime's
    float32 requantization and the fixed-point multiplier round to different sides). Each step is
    then fed ONNX Runtime's values, so that one difference cannot spread."""
    plan, _ = plan_int8(random_int8)
    assert {kind for kind, _, _, _ in plan.steps} == {
        "conv",
        "depthwise",
        "conv1x1",
        "table",
        "mul",
        "add",
        "mean",
    }
    library = traced_library(random_int8, tmp_path, flags)  # native: AVX-512 VNNI where the CPU has it
    fraction, worst, compared = steps_against_onnxruntime(random_int8, plan, library, 64, 3)
    assert fraction >= 0.999 and worst <= 1, (fraction, worst)
    assert compared > 4 * 100_000


def test_int8_c_tracks_onnxruntime_end_to_end(random_int8, tmp_path, c_toolchain):
    """Whole runs, no feeding: the random network amplifies a one-step difference (its BN gains are up to
    2), so the bar is the top-1 and the median logit, which a trained model (benchmarks/mcu.py) meets
    far more tightly."""
    from mobilenets.deploy.export import OnnxSession

    from parity import structured_inputs

    run = build_shared_library(random_int8, tmp_path / "c")
    session = OnnxSession(random_int8)
    plan, _ = plan_int8(random_int8)
    x = structured_inputs(24, 64, seed=7).numpy()
    ours = np.concatenate([run(image[None]) for image in x])
    reference = session(x)
    assert reference.std(0).mean() > 10 * plan.output_scale  # the logits move with the input
    steps = np.abs(ours - reference) / plan.output_scale
    assert np.median(steps) <= 1.001 and (steps <= 1.001).mean() >= 0.9
    assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.9
    model_c = (tmp_path / "c" / "model.c").read_text()
    code = re.sub(r"/\*.*?\*/", "", model_c, flags=re.S)
    assert not re.search(r"\b(float|double)\b", code), "float on the inference path"
    assert "malloc" not in model_c and "static int8_t A[" in model_c


def test_int8_c_matches_onnxruntime_on_the_demo_validation_images(demo_onnx, tmp_path, c_toolchain):
    """Issue 16's bar on a trained model: within one quantization step of ONNX Runtime running the same
    QDQ file on at least 99% of the logits, and the same top-1 on at least 99% of the demo's validation
    images."""
    from mobilenets.deploy.export import OnnxSession
    from mobilenets.deploy.quantize import quantize

    from conftest import demo_validation_inputs

    path = quantize(
        demo_onnx / "model.onnx", tmp_path / "demo.int8.onnx", demo_onnx / "demo-data" / "train"
    ).path
    images = demo_validation_inputs(demo_onnx)
    assert len(images) == 60
    run = build_shared_library(path, tmp_path / "c")
    ours = np.concatenate([run(image[None]) for image in images])
    reference = OnnxSession(path)(images)
    plan, _ = plan_int8(path)
    assert reference.std(0).mean() > 10 * plan.output_scale  # the logits move with the image
    steps = np.abs(ours - reference) / plan.output_scale
    assert (steps <= 1.001).mean() >= 0.99, np.sort(steps.ravel())[-10:]
    assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.99


def test_person_detector_fits_the_microcontroller_budget_and_runs_in_qemu(person, tmp_path, arm_toolchain):
    """V1 0.25 at 96x96x1, 2 classes (TFLite Micro's person detector): at most 64 KB of RAM and 300 KB of
    weights + code on Cortex-M4; the Cortex-M4 and Cortex-M55 images in QEMU print exactly what the
    same program prints on this machine; and the compiled model has no soft-float calls."""
    generated = generate(person, tmp_path / "c", max_ram=64 * 1024, max_flash=300 * 1024)
    folder = generated.folder
    assert generated.int8 and generated.ram_bytes <= 64 * 1024 and generated.classes == 2
    # Every depthwise and 1x1 step writes over its input, so the arena is the largest tensor alone (the
    # first 1x1's 48x48x16 output; with a room per tensor it is that plus its 48x48x8 input, 54 KiB).
    plan, _ = plan_int8(person)
    assert plan.arena_floats == 48 * 48 * 16
    assert plan.ram_bytes < 40 * 1024
    assert plan_int8(person, in_place=False)[0].arena_floats == 48 * 48 * (16 + 8)
    header = (folder / "model.h").read_text()
    assert f"#define MODEL_RAM_BYTES {generated.ram_bytes}" in header

    def make(*targets):
        result = subprocess.run(
            ["make", "-s", *targets], cwd=folder, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    make("test-host")
    host = subprocess.run([str(folder / "test-host")], capture_output=True, text=True, check=True).stdout
    lines = host.strip().splitlines()
    assert lines[0].startswith("test image: top-2 int8 logits") and len(lines) == 3
    assert {line.split(None, 1)[1] for line in lines[1:]} == {"no person", "person"}
    for machine in ("m4", "m55"):
        sizes = make(f"cortex-{machine}")
        text, data, bss = (int(v) for v in sizes.strip().splitlines()[-1].split()[:3])
        if machine == "m4":
            assert text + data <= 300 * 1024, sizes
        undefined = subprocess.run(
            ["arm-none-eabi-nm", "-u", str(folder / f"model_{machine}.o")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not re.search(r"__aeabi_[fd]|__aeabi_[ui]?[2l]?[fd]", undefined), undefined
        assert make(f"qemu-{machine}") == host


def test_what_the_int8_generator_cannot_take_is_named(demo_onnx, tmp_path):
    """A float op left between the int8 ones (--keep-float) names the node and the pattern; budgets that
    do not hold fail with the figures; --int8 on a float model says how to make an int8 one. Nothing is
    written in any of these cases."""
    from mobilenets.deploy.quantize import quantize

    kept = quantize(
        demo_onnx / "model.onnx",
        tmp_path / "se.onnx",
        demo_onnx / "demo-data" / "train",
        keep_float=("/se/",),
    )
    with pytest.raises(
        CodegenError,
        match=r"node '/blocks/0/se/conv_reduce/Conv' \(Conv\): input 'mean' is a float result that was never "
        r"quantized \(ReduceMean -> Conv with no QuantizeLinear between\); .* \(quantize without --keep-float\)",
    ):
        generate(kept.path, tmp_path / "a")
    with pytest.raises(
        CodegenError,
        match=r"RAM [\d,]+ bytes \(activation arena and accumulators\) exceeds --max-ram 1,024; an int8 model",
    ):
        generate(demo_onnx / "model.onnx", tmp_path / "b", max_ram=1024)
    with pytest.raises(CodegenError, match="is not an int8 QDQ model: make one with `mobilenets quantize"):
        generate(demo_onnx / "model.onnx", tmp_path / "c", int8=True)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_compile_c_cli_reports_int8_memory(person, tmp_path, capsys):
    assert main(["compile-c", str(person), "-o", str(tmp_path / "c"), "--max-ram", "64K"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\(int8, integer only\): RAM [\d.]+ KiB \(activation arena [\d.]+ KiB\), weights", out)
    assert "make qemu-m4 / qemu-m55" in out
    with pytest.raises(SystemExit):
        main(["compile-c", str(person), "-o", str(tmp_path / "d"), "--max-flash", "lots"])
    assert "--max-flash: must be a size such as 65536, 64K or 1M, got 'lots'" in capsys.readouterr().err
    assert main(["compile-c", str(person), "-o", str(tmp_path / "d"), "--max-flash", "10K"]) == 2
    assert re.search(
        r"flash [\d,]+ bytes \(the weights alone, before code\) exceeds --max-flash 10,240",
        capsys.readouterr().err,
    )


def test_int8_kernels_compile_alone_warning_free(tmp_path, c_toolchain):
    source = resources.files("mobilenets.codegen").joinpath("csrc", "kernels_int8.c")
    for flags in (["-O2"], ["-O3", "-march=native"], ["-O2", "-pedantic"]):
        result = subprocess.run(
            [
                "cc",
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                *flags,
                "-c",
                str(source),
                "-o",
                str(tmp_path / "k.o"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


def test_grayscale_pipeline_from_training_to_the_microcontroller_program(tmp_path, capsys, c_toolchain):
    """The person-detector path as a user runs it: train a grayscale classifier from scratch, export,
    quantize on colour images (made grayscale as the model's preprocessing says), compile-c, run."""
    import json

    import onnx

    import mobilenets.data.demo

    data = mobilenets.data.demo.write_dataset(
        tmp_path / "shapes", train_per_class=8, val_per_class=4, size=64
    )
    run, onnx_path, int8_path = tmp_path / "run", tmp_path / "gray.onnx", tmp_path / "gray.int8.onnx"
    args = ["train", str(data), "--out", str(run), "--model", "mobilenet_v1_025", "--in-chans", "1"]
    assert (
        main(args + ["--epochs", "1", "--image-size", "48", "--batch-size", "8", "--workers", "0", "--quiet"])
        == 0
    )
    assert json.loads((run / "config.json").read_text())["in_chans"] == 1
    assert main(["export", str(run), "-o", str(onnx_path)]) == 0
    proto = onnx.load(str(onnx_path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1
    meta = {p.key: p.value for p in proto.metadata_props}
    assert len(json.loads(meta["preprocessing"])["mean"]) == 1 and meta["in_chans"] == "1"
    assert main(["quantize", str(onnx_path), "--calibration", str(data / "train"), "-o", str(int8_path)]) == 0
    assert main(["compile-c", str(int8_path), "-o", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    subprocess.run(["make", "-s", "test-host"], cwd=tmp_path / "c", check=True, capture_output=True)
    printed = subprocess.run(
        [str(tmp_path / "c" / "test-host")], capture_output=True, text=True, check=True
    ).stdout
    lines = printed.strip().splitlines()
    assert lines[0].startswith("test image: top-5 int8 logits") and len(lines) == 6
    assert {line.split(None, 1)[1] for line in lines[1:]} <= set(mobilenets.data.demo.CLASSES)
    # A photo through the NumPy runner and through the C program's own PPM reader: both make it
    # grayscale (luma) and agree on the scores.
    picture = tmp_path / "shape.ppm"
    mobilenets.data.demo.image("val", 3, size=64)[0].save(picture)
    assert main(["run", str(int8_path), str(picture), "--top-k", "6"]) == 0
    runner = {
        line.split()[-1]: float(line.split()[0].rstrip("%")) for line in capsys.readouterr().out.splitlines()
    }
    subprocess.run(["make", "-s", "model"], cwd=tmp_path / "c", check=True, capture_output=True)
    result = subprocess.run(
        [str(tmp_path / "c" / "model"), str(picture), "--top-k", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    c_program = {line.split()[-1]: float(line.split()[0].rstrip("%")) for line in result.stdout.splitlines()}
    assert set(c_program) == set(runner) == set(mobilenets.data.demo.CLASSES)
    assert all(abs(c_program[name] - runner[name]) < 5 for name in runner), (c_program, runner)


def test_hostile_qdq_files_are_refused_by_name(person, tmp_path):
    """A QDQ file edited by hand: a weight's DequantizeLinear without its scale, with an axis outside the
    weights, a Conv without weights, an op the generator lacks. Each is refused naming the node."""
    import onnx

    def broken(change, name):
        model = onnx.load(str(person))
        change(model.graph)
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        return path

    def weight_dq(graph):
        return next(
            n
            for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized")
        )

    def drop_scale(graph):
        node = weight_dq(graph)
        del node.input[1:]

    def bad_axis(graph):
        node = weight_dq(graph)
        for attribute in node.attribute:
            if attribute.name == "axis":
                attribute.i = 7

    def no_weights(graph):
        conv = next(n for n in graph.node if n.op_type == "Conv")
        del conv.input[1:]

    def foreign_op(graph):
        next(n for n in graph.node if n.op_type == "Conv").op_type = "ConvTranspose"

    cases = [
        (drop_scale, r"node '[\w.]+weight_DequantizeLinear' \(DequantizeLinear\): needs a scale"),
        (bad_axis, r"\(DequantizeLinear\): axis 7 is outside the 4-D constant"),
        (no_weights, r"node '/stem/conv/Conv' \(Conv\): needs the weights \(input 1\)"),
        (
            foreign_op,
            r"\(ConvTranspose\): op ConvTranspose is not supported by the int8 C generator; supported: ",
        ),
    ]
    for change, message in cases:
        with pytest.raises(CodegenError, match=message):
            generate(broken(change, change.__name__), tmp_path / change.__name__)
        assert not (tmp_path / change.__name__).exists()


def test_overwrite_keeps_a_users_files_that_share_a_generated_name(person, demo_onnx, tmp_path):
    """--overwrite into a user's folder replaces only what it writes: a float model there leaves the
    user's own startup.c alone; over compile-c's own int8 output it removes the int8-only files."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "startup.c").write_text("/* mine */\n")
    generate(demo_onnx / "model.onnx", folder, overwrite=True)
    assert (folder / "startup.c").read_text() == "/* mine */\n"
    ours = tmp_path / "ours"
    generate(person, ours)
    assert (ours / "mcu_main.c").is_file()
    generate(demo_onnx / "model.onnx", ours)
    assert not (ours / "mcu_main.c").exists() and not (ours / "model_io.c").exists()
