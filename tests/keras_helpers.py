"""Keras reference models with random weights whose logits depend on the input (torch backend)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from parity import structured_inputs  # noqa: E402


def keras_model(kind: str, alpha: float = 1.0, size: int = 224, minimalistic: bool = False):
    import keras

    common = dict(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    if kind == "v1":
        return keras.applications.MobileNet(alpha=alpha, **common)
    if kind == "v2":
        return keras.applications.MobileNetV2(alpha=alpha, **common)
    factory = (
        keras.applications.MobileNetV3Large if kind == "v3_large" else keras.applications.MobileNetV3Small
    )
    return factory(alpha=alpha, minimalistic=minimalistic, include_preprocessing=True, **common)


def randomize_keras_batchnorm(model, seed: int = 0, size: int = 224, pixels_0_255: bool = False) -> None:
    """Random gamma/beta; moving statistics set from one training pass (momentum 0 = batch statistics)."""
    import keras

    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([rng.uniform(0.5, 2.0, gamma.shape), rng.normal(0, 0.5, beta.shape), mean, var])
        bn.momentum = 0.0
    x = nhwc(structured_inputs(8, size, seed=seed), pixels_0_255)
    model(x, training=True)
    for bn in bns:
        bn.momentum = 0.99


def nhwc(x_nchw, pixels_0_255: bool = False) -> np.ndarray:
    """Our normalised NCHW input as Keras NHWC; V3 Keras models rescale [0, 255] pixels themselves."""
    x = x_nchw.permute(0, 2, 3, 1).numpy()
    return (x * 0.5 + 0.5) * 255.0 if pixels_0_255 else x


def predict(model, x_nchw, pixels_0_255: bool = False) -> np.ndarray:
    out = model(nhwc(x_nchw, pixels_0_255), training=False)
    return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out)


def save_legacy_h5(model, path) -> None:
    """The layout of Keras Applications' weight files (layer_names / weight_names attributes)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
