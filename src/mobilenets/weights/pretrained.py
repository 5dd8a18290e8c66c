"""Pretrained ImageNet weights through the ordinary torch.hub cache, with a hash check.

``create_model("mobilenet_v3_large_100", weights="torchvision")`` downloads torchvision's file into
``torch.hub.get_dir()/checkpoints`` (or loads it from there when it is already cached) and converts it;
``weights="keras"`` does the same with the Keras Applications V3 files (TF-trained, [-1, 1] inputs), and
``weights="timm"`` with timm's safetensors files on the Hugging Face Hub. Hashes: torchvision's file
names carry their sha256 prefix, Keras publishes md5s, and the Hub publishes each file's sha256 (the
``X-Linked-Etag`` header), which the download is checked against. Nothing is downloaded by tests: they
place a file in the cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .preprocessing import Preprocessing

KERAS_V3_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
# md5 of Keras Applications' MobileNetV3 files with the classifier (keras/src/applications/mobilenet_v3.py).
KERAS_V3_MD5 = {
    "mobilenet_v3_large_075": ("large_224_0.75_float", "765b44a33ad4005b3ac83185abf1d0eb"),
    "mobilenet_v3_large_100": ("large_224_1.0_float", "59e551e166be033d707958cf9e29a6a7"),
    "mobilenet_v3_large_minimal_100": (
        "large_minimalistic_224_1.0_float",
        "675e7b876c45c57e9e63e6d90a36599c",
    ),
    "mobilenet_v3_small_075": ("small_224_0.75_float", "cb65d4e5be93758266aa0a7f2c6708b7"),
    "mobilenet_v3_small_100": ("small_224_1.0_float", "8768d4c2e7dee89b9d02b2d03d65d862"),
    "mobilenet_v3_small_minimal_100": (
        "small_minimalistic_224_1.0_float",
        "99cd97fb2fcdad2bf028eb838de69e37",
    ),
}
TORCHVISION_WEIGHTS = {
    "mobilenet_v2_100": ("MobileNet_V2_Weights", "mobilenet_v2"),
    "mobilenet_v3_large_100": ("MobileNet_V3_Large_Weights", "mobilenet_v3_large"),
    "mobilenet_v3_small_100": ("MobileNet_V3_Small_Weights", "mobilenet_v3_small"),
}
# Our variant -> timm's pretrained "name.tag" (its default ImageNet-1k weights for that architecture).
TIMM_WEIGHTS = {
    "mobilenet_v1_100": "mobilenetv1_100.ra4_e3600_r224_in1k",
    "mobilenet_v2_050": "mobilenetv2_050.lamb_in1k",
    "mobilenet_v2_100": "mobilenetv2_100.ra_in1k",
    "mobilenet_v2_140": "mobilenetv2_140.ra_in1k",
    "mobilenet_v3_large_075": "tf_mobilenetv3_large_075.in1k",
    "mobilenet_v3_large_100": "mobilenetv3_large_100.ra_in1k",
    "mobilenet_v3_small_075": "mobilenetv3_small_075.lamb_in1k",
    "mobilenet_v3_small_100": "mobilenetv3_small_100.lamb_in1k",
    "mobilenet_v3_large_minimal_100": "tf_mobilenetv3_large_minimal_100.in1k",
    "mobilenet_v3_small_minimal_100": "tf_mobilenetv3_small_minimal_100.in1k",
}
HF_URL = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
PRETRAINED = {"torchvision": TORCHVISION_WEIGHTS, "keras": KERAS_V3_MD5, "timm": TIMM_WEIGHTS}


@dataclass(frozen=True)
class HubFile:
    url: str
    file_name: str
    md5: str | None  # Keras' published hash; torchvision's is the sha256 prefix in its file name
    hub_sha256: bool = False  # True: check against the sha256 the Hugging Face Hub publishes


def available(source: str) -> list[str]:
    return list(PRETRAINED.get(source, {}))


def hub_file(arch: str, source: str) -> HubFile:
    if source not in PRETRAINED:
        raise ValueError(
            f"weights={source!r}: pretrained sources are {', '.join(PRETRAINED)} (or a checkpoint path)"
        )
    if arch not in PRETRAINED[source]:
        raise ValueError(
            f"no {source} ImageNet weights for {arch}; {source} has: {', '.join(available(source))}"
        )
    if source == "timm":
        name = TIMM_WEIGHTS[arch]
        return HubFile(HF_URL.format(name), f"timm--{name}.safetensors", None, hub_sha256=True)
    if source == "keras":
        name, md5 = KERAS_V3_MD5[arch]
        file_name = f"weights_mobilenet_v3_{name}.h5"
        return HubFile(KERAS_V3_URL + file_name, file_name, md5)
    weights = _torchvision_weights(arch)
    return HubFile(weights.url, weights.url.rsplit("/", 1)[1], None)


def _torchvision_weights(arch: str):
    import torchvision.models as models

    enum_name, _ = TORCHVISION_WEIGHTS[arch]
    return getattr(models, enum_name).DEFAULT


def cache_path(file: HubFile) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file.file_name


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hub_sha256(url: str) -> str:
    """The sha256 the Hugging Face Hub publishes for an LFS file: the X-Linked-Etag of its redirect."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(url, method="HEAD")
    try:
        headers = urllib.request.build_opener(NoRedirect).open(request, timeout=60).headers
    except urllib.error.HTTPError as response:  # the 302 itself carries the header
        headers = response.headers
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip('"')
    if len(etag) != 64:
        raise ValueError(f"{url}: the hub published no sha256 to check the download against")
    return etag


def fetch(file: HubFile, progress: bool = True) -> Path:
    """The cached file, downloading it first if needed; a hash mismatch deletes it and raises."""
    path = cache_path(file)
    if not path.exists() and file.hub_sha256:
        path.parent.mkdir(parents=True, exist_ok=True)
        expected = hub_sha256(file.url)
        torch.hub.download_url_to_file(file.url, str(path), hash_prefix=expected, progress=progress)
    elif not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # torchvision's file names carry the sha256 prefix, which download_url_to_file checks.
        prefix = None if file.md5 else file.file_name.rsplit("-", 1)[-1].split(".")[0]
        torch.hub.download_url_to_file(file.url, str(path), hash_prefix=prefix, progress=progress)
    if file.md5 and _md5(path) != file.md5:
        path.unlink()
        raise ValueError(f"{path}: md5 does not match {file.md5} (corrupt download, removed); try again")
    return path


def load_pretrained(arch: str, source: str, **options):
    """Our ``arch`` with ``source``'s ImageNet weights, converted; options go to create_model."""
    from .convert import convert

    file = hub_file(arch, source)
    path = fetch(file)
    source_arch = TIMM_WEIGHTS[arch] if source == "timm" else arch
    result = convert(path, source, source_arch, **options)
    model = result.model
    if source == "torchvision":
        weights = _torchvision_weights(arch)
        transform = weights.transforms()
        model.preprocessing = Preprocessing(
            resize=transform.resize_size[0],
            crop=transform.crop_size[0],
            interpolation=transform.interpolation.value,
            mean=tuple(transform.mean),
            std=tuple(transform.std),
        )
        model.class_names = list(weights.meta["categories"])
    model.provenance = result.provenance | {"url": file.url}
    return model
