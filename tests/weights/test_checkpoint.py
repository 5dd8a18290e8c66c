"""The native checkpoint format: round trip, metadata, atomic writes, and every refusal's message."""

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mobilenets
from mobilenets.weights.checkpoint import FORMAT, CheckpointError, atomic_write, load, read, save
from mobilenets.weights.preprocessing import Preprocessing


@pytest.fixture
def saved(tmp_path):
    model = mobilenets.create_model("mobilenet_v3_small_050", num_classes=3).eval()
    model.class_names = ["cat", "dog", "fox"]
    path = save(
        model,
        tmp_path / "pets.safetensors",
        preprocessing=Preprocessing.inception(resize=146, crop=128),
        provenance={"source": "test"},
    )
    return model, path


def test_round_trip_restores_weights_classes_and_preprocessing(saved):
    model, path = saved
    loaded, transform = load(path)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))
    assert loaded.arch == "mobilenet_v3_small_050" and loaded.class_names == ["cat", "dog", "fox"]
    assert loaded.preprocessing == Preprocessing(resize=146, crop=128, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert loaded.provenance == {"source": "test"}
    tensors, metadata = read(path)
    assert metadata["config"] == {
        "arch": "mobilenet_v3_small_050",
        "num_classes": 3,
        "in_chans": 3,
        "dropout": 0.2,
        "bn_eps": 1e-3,
        "bn_momentum": 0.01,
        "padding": "symmetric",
        "output_stride": 32,
    }
    assert all(t.is_contiguous() for t in tensors.values())


def test_transform_takes_pil_images_and_tensors(saved):
    _, path = saved
    _, transform = load(path)
    image = Image.fromarray(np.full((200, 300, 3), 255, np.uint8))
    out = transform(image)
    assert out.shape == (3, 128, 128) and torch.allclose(out, torch.ones_like(out))  # white -> +1 in [-1, 1]
    assert transform(torch.zeros(3, 150, 180, dtype=torch.uint8)).min() == -1


def test_other_num_classes_needs_reset_classifier(saved):
    model, path = saved
    with pytest.raises(CheckpointError, match=r"has a 3-class classifier, not 5; pass reset_classifier=True"):
        load(path, num_classes=5)
    tuned, _ = load(path, num_classes=5, reset_classifier=True)
    assert tuned.classifier.out_features == 5 and tuned.class_names is None
    torch.testing.assert_close(tuned.stem.conv.weight, model.stem.conv.weight)


def test_create_model_with_a_checkpoint_path(saved):
    _, path = saved
    model = mobilenets.create_model("mobilenet_v3_small_050", num_classes=3, weights=str(path))
    assert model.class_names == ["cat", "dog", "fox"]
    with pytest.raises(CheckpointError, match=r"holds mobilenet_v3_small_050 weights, not mobilenet_v2_100"):
        mobilenets.create_model("mobilenet_v2_100", weights=str(path))
    with pytest.raises(ValueError, match=r"weights='imagenet': use 'torchvision', 'keras', or the path"):
        mobilenets.create_model("mobilenet_v2_100", weights="imagenet")


def test_truncated_file_is_named(saved, tmp_path):
    _, path = saved
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(
        CheckpointError,
        match=r"broken.safetensors is not a readable safetensors file \(truncated or corrupt\?\)",
    ):
        load(broken)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors is not a readable safetensors file"):
        load(empty)
    with pytest.raises(FileNotFoundError, match="nothere.safetensors does not exist"):
        load(tmp_path / "nothere.safetensors")


def test_foreign_safetensors_is_refused_with_advice(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(
        CheckpointError,
        match=r"not a mobilenets checkpoint .* convert foreign weights with `mobilenets convert`",
    ):
        load(path)


def test_checkpoint_for_another_width_names_the_first_mismatches(saved, tmp_path):
    model, path = saved
    tensors, metadata = read(path)
    raw = {k: json.dumps(v) for k, v in metadata.items()} | {"format": FORMAT}
    config = dict(metadata["config"], arch="mobilenet_v3_small_075")
    raw["config"] = json.dumps(config)
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong), metadata=raw)
    with pytest.raises(
        CheckpointError,
        match=r"wrong.safetensors does not fit mobilenet_v3_small_075: \d+ shape mismatches, first: stem.conv.weight: checkpoint \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)",
    ):
        load(wrong)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(saved, tmp_path):
    _, path = saved
    before = path.read_bytes()

    def failing_write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pets.safetensors"]


def test_save_needs_a_registered_model_and_matching_class_names(tmp_path):
    plain = mobilenets.MobileNet(mobilenets.get_variant("mobilenet_v2_050").plan())
    with pytest.raises(CheckpointError, match="save\\(\\) needs a model made by mobilenets.create_model"):
        save(plain, tmp_path / "x.safetensors")
    model = mobilenets.create_model("mobilenet_v2_050", num_classes=2)
    with pytest.raises(CheckpointError, match="3 class names for a model with 2 classes"):
        save(model, tmp_path / "x.safetensors", class_names=["a", "b", "c"])
    assert not os.path.exists(tmp_path / "x.safetensors")


def test_bad_preprocessing_values_are_named():
    with pytest.raises(
        ValueError, match=r"interpolation must be one of \('bilinear', 'bicubic', 'nearest'\), got 'cubic'"
    ):
        Preprocessing(interpolation="cubic")
    with pytest.raises(ValueError, match="need 0 < crop <= resize, got crop=300, resize=256"):
        Preprocessing(crop=300)


def test_imagenet_class_names_ship_with_the_package():
    names = mobilenets.weights.preprocessing.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet tissue"


def _rewritten(path, tmp_path, tensors=None, **metadata_changes):
    """The checkpoint at ``path`` with some tensors or metadata entries replaced, as a hostile file would."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
        state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    state.update(tensors or {})
    for key, change in metadata_changes.items():
        metadata[key] = json.dumps(change(json.loads(metadata[key])))
    out = tmp_path / "hostile.safetensors"
    save_file(state, str(out), metadata=metadata)
    return out


def test_a_tensor_of_the_wrong_dtype_is_refused(saved, tmp_path):
    _, path = saved
    tensors, _ = read(path)
    key = next(k for k in tensors if k.endswith("weight") and tensors[k].ndim == 4)
    hostile = _rewritten(path, tmp_path, {key: tensors[key].to(torch.int32)})
    with pytest.raises(
        CheckpointError,
        match=rf"1 dtype mismatches, first: {key}: checkpoint torch.int32 vs model torch.float32",
    ):
        load(hostile)
    halves = _rewritten(path, tmp_path, {key: tensors[key].half()})  # another float precision loads
    assert load(halves)[0].state_dict()[key].dtype == torch.float32


def test_metadata_sizes_are_checked_against_the_tensors_before_allocating(saved, tmp_path):
    """A 1 MB file claiming a million classes (a 4 GB classifier) is refused from its tensors' shapes
    before any model is built (the peak memory does not grow by the classifier's size)."""
    import resource

    _, path = saved

    def claim(config):
        return {**config, "num_classes": 1_000_000}

    hostile = _rewritten(path, tmp_path, config=claim, class_names=lambda names: None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        CheckpointError, match=r"classifier.weight: checkpoint \(3, 1024\) vs model \(1000000, 1024\)"
    ):
        load(hostile)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000  # KiB: under 1 GB


@pytest.mark.parametrize(
    "key, change, message",
    [
        ("config", lambda c: {**c, "num_classes": 10**9}, "config num_classes must be 0..1,000,000"),
        ("config", lambda c: {**c, "in_chans": 4096}, "config in_chans must be 1..64"),
        ("config", lambda c: {**c, "dropout": "0.2"}, "config 'dropout' must be float"),
        ("config", lambda c: {**c, "head_conv": 0}, "config 'head_conv' must be bool, got 0"),
        ("config", lambda c: {**c, "memory_format": "x"}, "unknown config entry 'memory_format'"),
        ("config", lambda c: {**c, "reduced_tail": "yes"}, "config 'reduced_tail' must be bool, got 'yes'"),
        (
            "config",
            lambda c: {**c, "pool_kernel": [0, 10**9]},
            "config 'pool_kernel' must be [height, width] from 1 to 4096, got [0, 1000000000]",
        ),
        ("config", lambda c: {**c, "pool_stride": 7}, "config 'pool_stride' must be [height, width]"),
        ("config", lambda c: [1], "metadata 'config' must be an object naming the architecture"),
        ("class_names", lambda n: ["a"], "class_names must be null or a list of 3 strings"),
        (
            "preprocessing",
            lambda p: {**p, "crop": 10**9},
            "crop must be a whole number of pixels from 1 to 8192",
        ),
        ("preprocessing", lambda p: {**p, "mean": "abc"}, "mean must be a list of 1 to 64 numbers"),
        ("preprocessing", lambda p: {**p, "std": [1e309, 1, 1]}, "mean and std must be finite"),
    ],
)
def test_hostile_metadata_is_named(saved, tmp_path, key, change, message):
    _, path = saved
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load(_rewritten(path, tmp_path, **{key: change}))
