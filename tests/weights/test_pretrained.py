"""Pretrained weights through the torch.hub cache. Nothing is downloaded: files are placed in the cache."""

import hashlib

import pytest
import torch

import mobilenets
from mobilenets.weights import pretrained as hub
from mobilenets.weights.checkpoint import CheckpointError

from parity import randomize_batchnorm, relative_max_diff, structured_inputs

torchvision = pytest.importorskip("torchvision")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_torchvision_weights_load_from_the_cache(cache):
    file = hub.hub_file("mobilenet_v3_large_100", "torchvision")
    assert file.file_name == "mobilenet_v3_large-5c1a4163.pth"  # torchvision's DEFAULT (IMAGENET1K_V2)
    reference = randomize_batchnorm(torchvision.models.mobilenet_v3_large().eval(), seed=6)
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / file.file_name)
    model = mobilenets.create_model("mobilenet_v3_large_100", weights="torchvision").eval()
    x = structured_inputs(2, 224)
    with torch.no_grad():
        assert relative_max_diff(model(x), reference(x)) < 1e-4
    assert model.preprocessing.resize == 232 and model.preprocessing.crop == 224
    assert len(model.class_names) == 1000 and model.provenance["url"].endswith(file.file_name)


def test_a_missing_file_is_downloaded_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    mobilenets.create_model("mobilenet_v3_small_100", weights="torchvision")
    assert calls == [("https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth", "047dcff4")]
    mobilenets.create_model("mobilenet_v3_small_100", weights="torchvision")
    assert len(calls) == 1  # the second call used the cache


def test_keras_weights_are_md5_checked(cache, tmp_path, monkeypatch):
    pytest.importorskip("keras")
    from keras_helpers import keras_model, save_legacy_h5

    file = hub.hub_file("mobilenet_v3_small_100", "keras")
    assert file.url.endswith("weights_mobilenet_v3_small_224_1.0_float.h5")
    cache.mkdir(parents=True)
    (cache / file.file_name).write_bytes(b"tampered")
    with pytest.raises(
        ValueError, match=r"md5 does not match 8768d4c2e7dee89b9d02b2d03d65d862 \(corrupt download, removed\)"
    ):
        mobilenets.create_model("mobilenet_v3_small_100", weights="keras")
    assert not (cache / file.file_name).exists()
    save_legacy_h5(keras_model("v3_small"), cache / file.file_name)
    digest = hashlib.md5((cache / file.file_name).read_bytes()).hexdigest()
    monkeypatch.setitem(hub.KERAS_V3_MD5, "mobilenet_v3_small_100", ("small_224_1.0_float", digest))
    model = mobilenets.create_model("mobilenet_v3_small_100", weights="keras")
    assert model.padding == "same" and model.preprocessing.mean == (0.5, 0.5, 0.5)


def test_unavailable_weights_say_what_exists(cache):
    with pytest.raises(
        ValueError,
        match="no torchvision ImageNet weights for mobilenet_v1_100; torchvision has: mobilenet_v2_100, mobilenet_v3_large_100, mobilenet_v3_small_100",
    ):
        mobilenets.create_model("mobilenet_v1_100", weights="torchvision")
    with pytest.raises(ValueError, match="no keras ImageNet weights for mobilenet_v2_100"):
        mobilenets.create_model("mobilenet_v2_100", weights="keras")


def test_fine_tuning_from_pretrained_needs_reset_classifier(cache):
    file = hub.hub_file("mobilenet_v2_100", "torchvision")
    cache.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), cache / file.file_name)
    with pytest.raises(
        CheckpointError, match="torchvision weights have 1000 classes, not 4; pass reset_classifier=True"
    ):
        mobilenets.create_model("mobilenet_v2_100", weights="torchvision", num_classes=4)
    model = mobilenets.create_model(
        "mobilenet_v2_100", weights="torchvision", num_classes=4, reset_classifier=True
    )
    assert model.classifier.out_features == 4 and model.class_names is None


def test_timm_weights_are_checked_against_the_hubs_sha256(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = randomize_batchnorm(timm.create_model("mobilenetv3_small_100").eval(), seed=8)
    payload = tmp_path / "payload.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(payload))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    monkeypatch.setattr(hub, "hub_sha256", lambda url: digest)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        (tmp_path / "hub" / "checkpoints" / dst.rsplit("/", 1)[-1]).write_bytes(payload.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = mobilenets.create_model("mobilenet_v3_small_100", weights="timm").eval()
    assert calls == [
        ("https://huggingface.co/timm/mobilenetv3_small_100.lamb_in1k/resolve/main/model.safetensors", digest)
    ]
    assert model.preprocessing.interpolation == "bicubic" and model.bn_eps == 1e-5
    x = structured_inputs(2, 224)
    with torch.no_grad():
        assert relative_max_diff(model(x), reference(x)) < 1e-4


def test_ssdlite_takes_imagenet_weights_in_its_backbone_and_its_own_checkpoints(cache, tmp_path):
    """weights="torchvision" on a detector is torchvision's ``weights_backbone``: the classifier's tensors
    but its head in the backbone, the extra layers and heads fresh; a detection checkpoint loads as it
    is, or with new class heads (reset_classifier) for other classes."""
    file = hub.hub_file("mobilenet_v3_large_100", "torchvision")
    cache.mkdir(parents=True)
    torch.save(
        randomize_batchnorm(torchvision.models.mobilenet_v3_large().eval(), seed=2).state_dict(),
        cache / file.file_name,
    )
    classifier = mobilenets.create_model("mobilenet_v3_large_100", weights="torchvision")
    detector = mobilenets.create_model("ssdlite_mobilenet_v3_large", weights="torchvision", num_classes=5)
    backbone = detector.backbone.state_dict()
    shared = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "classifier."))}
    assert shared.keys() == backbone.keys() and all(torch.equal(v, backbone[k]) for k, v in shared.items())
    assert detector.backbone.bn_eps == 1e-3 and detector.num_classes == 5
    with pytest.raises(ValueError, match="reduced_tail=True has none"):
        mobilenets.create_model("ssdlite_mobilenet_v3_large", weights="torchvision", reduced_tail=True)

    path = tmp_path / "det.safetensors"
    mobilenets.save(detector, path, class_names=["background", "a", "b", "c", "d"])
    again = mobilenets.create_model("ssdlite_mobilenet_v3_large", weights=str(path))
    assert again.num_classes == 5 and all(
        torch.equal(v, again.state_dict()[k]) for k, v in detector.state_dict().items()
    )
    with pytest.raises(CheckpointError, match="pass reset_classifier=True"):
        mobilenets.create_model("ssdlite_mobilenet_v3_large", weights=str(path), num_classes=3)
    fresh = mobilenets.create_model(
        "ssdlite_mobilenet_v3_large", weights=str(path), num_classes=3, reset_classifier=True
    )
    state = fresh.state_dict()
    assert state["classification.0.1.weight"].shape[0] == 6 * 3  # 6 boxes per cell x 3 classes
    kept = [k for k in state if not k.startswith("classification.")]
    assert all(torch.equal(state[k], detector.state_dict()[k]) for k in kept)
    with pytest.raises(
        CheckpointError, match="holds ssdlite_mobilenet_v3_large_100 weights, not ssdlite_mobilenet_v2"
    ):
        mobilenets.create_model("ssdlite_mobilenet_v2", weights=str(path))


def test_train_a_detector_from_imagenet_weights(cache, tmp_path):
    """`train --weights torchvision --model ssdlite_...`: the backbone starts from the cached ImageNet file,
    the checkpoint normalises as those weights expect, at the training size."""
    from mobilenets.training import config_from_recipe, fit

    file = hub.hub_file("mobilenet_v3_small_100", "torchvision")
    cache.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), cache / file.file_name)
    settings = dict(task="detect", model="ssdlite_mobilenet_v3_small_100", weights="torchvision", epochs=1,
                    batch_size=4, image_size=64, workers=0, demo_images={"train": 8, "val": 4, "size": 64})  # fmt: skip
    result = fit(
        config_from_recipe("finetune", data="demo", out=str(tmp_path / "run"), **settings), progress=False
    )
    model, _ = mobilenets.load(result.run / "best.safetensors")
    assert model.num_classes == 7 and (model.preprocessing.resize, model.preprocessing.crop) == (64, 64)
    assert model.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
