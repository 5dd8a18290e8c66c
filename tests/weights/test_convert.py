"""Converters: torchvision, timm and Keras weights load into our models with matching logits.

Parity is checked live against the source library's own model, with random weights and BN statistics
recalibrated so the logits depend on the input, at 224 and one other resolution. Tolerance: 1e-4 of the
largest logit (the issue's bar).
"""

import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.weights.checkpoint import CheckpointError
from mobilenets.weights.convert import convert, read_torch_state_dict

from parity import assert_varies, randomize_batchnorm, relative_max_diff, structured_inputs

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

TOL = 1e-4


def _check(model, reference, resolutions=(224, 160)):
    model.eval()
    for resolution in resolutions:
        x = structured_inputs(3, resolution, seed=resolution)
        with torch.no_grad():
            expected, got = reference(x), model(x)
        assert_varies(expected)
        assert relative_max_diff(got, expected) < TOL, resolution


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_torchvision_model_and_file(name, tmp_path):
    reference = randomize_batchnorm(getattr(torchvision.models, name)().eval(), seed=2)
    from_model = convert(reference, "torchvision").model
    assert from_model.arch == f"{name}_100"
    _check(from_model, reference)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    from_file = convert(path, "torchvision", name).model
    _check(from_file, reference, resolutions=(192,))
    assert from_file.class_names[:2] == ["tench", "goldfish"]


TIMM = [
    ("mobilenetv1_100", "mobilenet_v1_100", "symmetric", (0.5, 0.5, 0.5)),
    ("mobilenetv2_100", "mobilenet_v2_100", "symmetric", (0.485, 0.456, 0.406)),
    ("mobilenetv2_050", "mobilenet_v2_050", "symmetric", (0.485, 0.456, 0.406)),
    ("mobilenetv3_large_100", "mobilenet_v3_large_100", "symmetric", (0.485, 0.456, 0.406)),
    ("mobilenetv3_small_075", "mobilenet_v3_small_075", "symmetric", (0.485, 0.456, 0.406)),
    ("tf_mobilenetv3_large_075", "mobilenet_v3_large_075", "same", (0.5, 0.5, 0.5)),
    ("tf_mobilenetv3_small_100", "mobilenet_v3_small_100", "same", (0.5, 0.5, 0.5)),
    ("tf_mobilenetv3_large_minimal_100", "mobilenet_v3_large_minimal_100", "same", (0.5, 0.5, 0.5)),
    ("tf_mobilenetv3_small_minimal_100", "mobilenet_v3_small_minimal_100", "same", (0.5, 0.5, 0.5)),
]


@pytest.mark.parametrize(("timm_name", "ours", "padding", "mean"), TIMM)
def test_timm_model(timm_name, ours, padding, mean):
    reference = randomize_batchnorm(timm.create_model(timm_name).eval(), seed=3)
    model = convert(reference, "timm").model
    assert (model.arch, model.padding, model.preprocessing.mean) == (ours, padding, mean)
    assert model.bn_eps == (1e-3 if timm_name.startswith("tf_") else 1e-5)
    _check(model, reference)


def test_timm_safetensors_file_with_the_timm_name(tmp_path):
    from safetensors.torch import save_file

    reference = randomize_batchnorm(timm.create_model("tf_mobilenetv3_large_100").eval(), seed=4)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = convert(path, "timm", "tf_mobilenetv3_large_100.in1k").model
    assert model.padding == "same" and model.provenance["file"] == "model.safetensors"
    _check(model, reference, resolutions=(224, 192))


def test_wrong_arch_names_the_missing_tensor(tmp_path):
    path = tmp_path / "v3l.pth"
    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"no 'features.1.block.1.fc1.weight' \(needed for blocks.0.se.conv_reduce\): is --arch mobilenet_v3_small right\?",
    ):
        convert(path, "torchvision", "mobilenet_v3_small")
    with pytest.raises(
        CheckpointError, match=r"the timm weights have \d+ blocks, mobilenet_v2_100 has 17: wrong --arch\?"
    ):
        convert(timm.create_model("mobilenetv1_100"), "timm", "mobilenet_v2_100")


def test_a_width_mismatch_names_the_first_shapes():
    with pytest.raises(
        CheckpointError,
        match=r"does not fit mobilenet_v2_075: \d+ shape mismatches, first: stem.conv.weight: checkpoint \(32, 3, 3, 3\) vs model \(24, 3, 3, 3\)",
    ):
        convert(timm.create_model("mobilenetv2_100"), "timm", "mobilenet_v2_075")


def test_timm_fixed_stem_variants_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="keeps a 16-channel stem below width 0.75"):
        convert(timm.create_model("mobilenetv3_small_050"), "timm")


def test_pickles_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(CheckpointError, match=r"evil.pth could not be read as a weights-only state dict"):
        read_torch_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"unsupported file type '.pkl'"):
        read_torch_state_dict(bad.rename(tmp_path / "evil.pkl"))
    truncated = tmp_path / "cut.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:20000])
    with pytest.raises(CheckpointError, match="cut.pth could not be read as a weights-only state dict"):
        read_torch_state_dict(truncated)


def test_training_checkpoints_are_unwrapped(tmp_path):
    state = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in state.items()}}, path)
    assert list(read_torch_state_dict(path))[:2] == ["features.0.0.weight", "features.0.1.weight"]


def test_cli_convert_writes_a_loadable_checkpoint(tmp_path, capsys):
    reference = randomize_batchnorm(torchvision.models.mobilenet_v3_small().eval(), seed=5)
    src = tmp_path / "small.pth"
    torch.save(reference.state_dict(), src)
    out = tmp_path / "small.safetensors"
    assert (
        main(["convert", str(src), "--from", "torchvision", "--arch", "mobilenet_v3_small", "-o", str(out)])
        == 0
    )
    assert "mobilenet_v3_small_100, 1000 classes" in capsys.readouterr().out
    model, _ = mobilenets.load(out)
    assert model.provenance["source"] == "torchvision" and len(model.provenance["sha256"]) == 64
    _check(model, reference, resolutions=(224,))
    with pytest.raises(SystemExit):
        main(["convert", str(src), "--from", "caffe", "--arch", "x", "-o", str(out)])
    assert "invalid choice: 'caffe'" in capsys.readouterr().err
