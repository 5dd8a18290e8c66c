"""Keras Applications weights (.h5, .weights.h5, .keras) load with matching logits, read with h5py only."""

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.weights.checkpoint import CheckpointError
from mobilenets.weights.convert import convert

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


@pytest.mark.parametrize(("kind", "arch"), [("v2", "mobilenet_v2_035"), ("v1", "mobilenet_v1_025")])
def test_a_fine_tuned_nested_keras_model_converts(kind, arch, tmp_path):
    """The usual Keras fine-tuning: the Applications base (include_top=False) inside a Functional model,
    then pooling, dropout and a Dense of the user's own name. Every saving format, logits within 1e-4."""
    import keras

    size = 96
    base = {"v1": keras.applications.MobileNet, "v2": keras.applications.MobileNetV2}[kind](
        alpha=float(arch[-3:]) / 100, input_shape=(size, size, 3), include_top=False, weights=None
    )
    randomize_keras_batchnorm(base, seed=4, size=size)
    inputs = keras.Input((size, size, 3))
    features = keras.layers.GlobalAveragePooling2D()(base(inputs))
    logits = keras.layers.Dense(5, name="flower_logits")(keras.layers.Dropout(0.3)(features))
    reference = keras.Model(inputs, logits)
    x = structured_inputs(3, size, seed=5)
    expected = predict(reference, x)
    assert np.abs(expected - expected.mean(0)).max() / np.abs(expected).max() > 1e-2
    for name in ("tuned.h5", "tuned.weights.h5", "tuned.keras"):
        _save(reference, tmp_path / name)
        model = convert(tmp_path / name, "keras", arch).model.eval()
        assert model.num_classes == 5
        with torch.no_grad():
            got = model(x).numpy()
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4, name


@pytest.mark.parametrize(
    ("factory", "arch", "features"),
    [
        ("MobileNetV3Small", "mobilenet_v3_small_075", 432),
        ("MobileNetV3Large", "mobilenet_v3_large_100", 960),
    ],
)
def test_a_fine_tuned_nested_v3_converts_without_its_head_conv(factory, arch, features, tmp_path):
    """A Keras V3 base with include_top=False ends at conv_1 (its Rescaling layer takes [0, 255] pixels):
    the user's Dense takes the last conv's channels, so the model is built with head_conv=False."""
    import keras

    size = 96
    base = getattr(keras.applications, factory)(
        alpha=float(arch[-3:]) / 100, input_shape=(size, size, 3), include_top=False, weights=None
    )
    randomize_keras_batchnorm(base, seed=6, size=size, pixels_0_255=True)
    inputs = keras.Input((size, size, 3))
    features_out = keras.layers.GlobalAveragePooling2D()(base(inputs))
    logits = keras.layers.Dense(4, name="mine")(keras.layers.Dropout(0.2)(features_out))
    reference = keras.Model(inputs, logits)
    x = structured_inputs(3, size, seed=7)
    expected = predict(reference, x, pixels_0_255=True)
    assert np.abs(expected - expected.mean(0)).max() / np.abs(expected).max() > 1e-2
    for name in ("v3.h5", "v3.keras"):
        _save(reference, tmp_path / name)
        model = convert(tmp_path / name, "keras", arch).model.eval()
        assert isinstance(model.head, torch.nn.Identity) and model.classifier.in_features == features
        assert model.config["head_conv"] is False
        with torch.no_grad():
            got = model(x).numpy()
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4, name
    saved = mobilenets.save(model, tmp_path / "v3.safetensors")
    loaded, _ = mobilenets.load(saved)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_a_keras_dense_of_the_wrong_width_is_named(tmp_path):
    import keras

    base = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), include_top=False, weights=None, include_preprocessing=False
    )
    inputs = keras.Input((96, 96, 3))
    reference = keras.Model(
        inputs, keras.layers.Dense(5, name="mine")(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    )
    reference.save_weights(tmp_path / "v3.weights.h5")
    with pytest.raises(
        CheckpointError,
        match=r"classifier 'mine' takes 576 features, but this architecture's classifier takes 1280 or 960: "
        r"is --arch right\?",
    ):
        convert(tmp_path / "v3.weights.h5", "keras", "mobilenet_v3_large_100")


def test_a_keras_head_with_more_than_one_dense_is_refused(tmp_path):
    """Dense(960 -> 64) then Dense(64 -> 3): converting the first alone would be a silent wrong answer."""
    import keras

    base = keras.applications.MobileNetV3Small(
        alpha=0.75, input_shape=(96, 96, 3), include_top=False, weights=None
    )
    inputs = keras.Input((96, 96, 3))
    hidden = keras.layers.Dense(64, name="hidden")(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    reference = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    reference.save_weights(tmp_path / "mlp.weights.h5")
    with pytest.raises(
        CheckpointError,
        match="weighted layers outside the MobileNet base besides its classifier 'hidden': out; only "
        "pooling, dropout and one Dense can follow the base",
    ):
        convert(tmp_path / "mlp.weights.h5", "keras", "mobilenet_v3_small_075")
