"""Keras weights files nobody here wrote: HDF5 features that read other local files are refused, and a
.keras zip is inflated in a bounded read. h5py only (no Keras needed to make the files)."""

import zipfile

import numpy as np
import pytest

import mobilenets.weights.from_keras as convert_module
from mobilenets.weights.checkpoint import CheckpointError
from mobilenets.weights.from_keras import read_keras_weights

h5py = pytest.importorskip("h5py")


@pytest.fixture
def secret(tmp_path):
    """A local file the weights must never pull in."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    return path


def _legacy(path, make_dataset):
    """A legacy Keras .h5 layout (layer_names / weight_names) whose one weight ``make_dataset`` creates."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"conv1"]
        group = handle.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0"]
        make_dataset(group, "conv1/kernel:0")
    return path


def test_a_plain_legacy_file_reads(tmp_path):
    path = _legacy(
        tmp_path / "ok.h5", lambda g, n: g.create_dataset(n, data=np.ones((1, 1, 4, 4), np.float32))
    )
    assert read_keras_weights(path)["conv1"][0].shape == (1, 1, 4, 4)


def test_external_storage_is_refused(tmp_path, secret):
    path = _legacy(
        tmp_path / "external.h5",
        lambda g, n: g.create_dataset(n, shape=(16,), dtype="<f4", external=[(str(secret), 0, 64)]),
    )
    with pytest.raises(CheckpointError, match=r"keeps its data in external storage .*secret\.bin.*refused"):
        read_keras_weights(path)


def test_external_links_are_refused(tmp_path, secret):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.arange(16, dtype=np.float32)

    def link(group, name):
        group.create_group("conv1")
        group["conv1"]["kernel:0"] = h5py.ExternalLink(str(other), "/data")

    path = _legacy(tmp_path / "link.h5", link)
    with pytest.raises(CheckpointError, match=r"is an external link to .*other\.h5.*refused"):
        read_keras_weights(path)


def test_virtual_datasets_are_refused(tmp_path):
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.arange(16, dtype=np.float32)

    def virtual(group, name):
        layout = h5py.VirtualLayout(shape=(16,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=(16,))
        group.create_virtual_dataset(name, layout)

    path = _legacy(tmp_path / "virtual.h5", virtual)
    with pytest.raises(CheckpointError, match="is a virtual dataset .data from other files.; refused"):
        read_keras_weights(path)


def test_a_keras_zip_is_inflated_in_a_bounded_read(tmp_path, monkeypatch):
    """model.weights.h5 inflating past the limit is refused without reading it whole (the limit is
    lowered here so the bomb stays small: 8 MiB of zeros, ~8 KiB compressed)."""
    monkeypatch.setattr(convert_module, "MAX_KERAS_WEIGHTS_BYTES", 1 << 20)
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.weights.h5", bytes(8 << 20))
    assert path.stat().st_size < 64 << 10
    with pytest.raises(CheckpointError, match="model.weights.h5 inflates to more than 1 MiB; refused"):
        read_keras_weights(path)
