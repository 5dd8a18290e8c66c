"""Keras Applications weights (.h5, .weights.h5, .keras) load with matching logits, read with h5py only."""

import numpy as np
import pytest
import torch

from mobilenets.checkpoint import CheckpointError
from mobilenets.convert import convert

from parity import structured_inputs

pytest.importorskip("keras")
pytest.importorskip("h5py")
from keras_helpers import keras_model, predict, randomize_keras_batchnorm, save_legacy_h5  # noqa: E402

CASES = [
    ("v1", 1.0, False, "mobilenet_v1_100"),
    ("v1", 0.25, False, "mobilenet_v1_025"),
    ("v2", 1.0, False, "mobilenet_v2_100"),
    ("v2", 0.35, False, "mobilenet_v2_035"),
    ("v3_large", 1.0, False, "mobilenet_v3_large_100"),
    ("v3_large", 0.75, False, "mobilenet_v3_large_075"),
    ("v3_small", 1.0, False, "mobilenet_v3_small_100"),
    ("v3_large", 1.0, True, "mobilenet_v3_large_minimal_100"),
    ("v3_small", 1.0, True, "mobilenet_v3_small_minimal_100"),
]


def _save(model, path):
    if path.suffix == ".keras":
        model.save(path)
    elif path.name.endswith(".weights.h5"):
        model.save_weights(path)
    else:
        save_legacy_h5(model, path)


@pytest.mark.parametrize(("kind", "alpha", "minimal", "arch"), CASES, ids=[c[3] for c in CASES])
@pytest.mark.parametrize("size", [224, 160])
def test_keras_weights_match_keras_logits(kind, alpha, minimal, arch, size, tmp_path):
    reference = keras_model(kind, alpha, size, minimal)
    pixels = kind.startswith("v3")  # V3 Keras models rescale [0, 255] pixels in the model
    randomize_keras_batchnorm(reference, seed=size, size=size, pixels_0_255=pixels)
    x = structured_inputs(3, size, seed=11)
    expected = predict(reference, x, pixels)
    spread = np.abs(expected - expected.mean(0)).max() / np.abs(expected).max()
    assert spread > 1e-2
    suffix = {224: "h5", 160: "weights.h5"}[size]
    for name in (f"model.{suffix}", "model.keras") if size == 224 else (f"model.{suffix}",):
        path = tmp_path / name
        _save(reference, path)
        model = convert(path, "keras", arch).model.eval()
        assert (model.padding, model.bn_eps, model.preprocessing.mean) == ("same", 1e-3, (0.5, 0.5, 0.5))
        with torch.no_grad():
            got = model(x).numpy()
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4, name


def test_1001_class_head_drops_the_background_class(tmp_path):
    import keras

    reference = keras.applications.MobileNetV2(
        alpha=0.35, weights=None, input_shape=(224, 224, 3), classes=1001, classifier_activation=None
    )
    randomize_keras_batchnorm(reference, seed=1)
    path = tmp_path / "tf_slim_style.h5"
    save_legacy_h5(reference, path)
    result = convert(path, "keras", "mobilenet_v2_035")
    assert result.model.num_classes == 1000 and result.provenance["dropped_background_class"]
    assert result.model.class_names[0] == "tench"
    x = structured_inputs(2, 224, seed=1)
    expected = predict(reference, x)
    with torch.no_grad():
        got = result.model.eval()(x).numpy()
    assert np.abs(got - expected[:, 1:]).max() / np.abs(expected).max() < 1e-4


def test_corrupt_and_wrong_keras_files_are_named(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(
        CheckpointError, match=r"bad.h5 is not a readable Keras weights file \(truncated or corrupt\?\)"
    ):
        convert(bad, "keras", "mobilenet_v2_100")
    reference = keras_model("v3_small", 1.0, 224)
    path = tmp_path / "small.weights.h5"
    reference.save_weights(path)
    with pytest.raises(
        CheckpointError,
        match=r"the keras weights have no 'expanded_conv_11_expand' \(needed for blocks.11.expand.conv\): is --arch mobilenet_v3_large_100 right\?",
    ):
        convert(path, "keras", "mobilenet_v3_large_100")
