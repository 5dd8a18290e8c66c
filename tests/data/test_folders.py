"""Decoding every common image mode, refusing bad files with their names, folders and splits."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import demo
from mobilenets.data.folders import (
    BadFile,
    BadFileLog,
    BadImage,
    FolderDataset,
    collate_skip_bad,
    load_image,
    split_folder,
    train_transform,
)
from mobilenets.weights.preprocessing import Preprocessing


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture
def rgb():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB")


def test_modes_are_converted_to_8bit_rgb(tmp_path, rgb):
    gray = _save(rgb.convert("L"), tmp_path / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white
    transparent = _save(rgba, tmp_path / "rgba.png")
    palette = _save(rgb.convert("P", palette=Image.ADAPTIVE, colors=16), tmp_path / "palette.gif")
    cmyk = _save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg")
    sixteen = _save(Image.fromarray(np.full((8, 8), 65535, np.uint16)), tmp_path / "16bit.png")
    half = _save(Image.fromarray(np.full((8, 8), 32896, np.uint16)), tmp_path / "16bit_half.png")
    for path in (gray, transparent, palette, cmyk, sixteen):
        image = load_image(path)
        assert image.mode == "RGB", path
    assert np.asarray(load_image(gray))[..., 0].tolist() == np.asarray(rgb.convert("L")).tolist()
    assert (np.asarray(load_image(transparent)) == 255).all()
    assert (np.asarray(load_image(sixteen)) == 255).all()  # 16-bit white stays white, not clipped noise
    assert (np.asarray(load_image(half)) == 128).all()  # scaled, not clipped at 255


def test_bad_files_are_refused_with_their_name(tmp_path, rgb):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    full = _save(rgb.resize((200, 200)), tmp_path / "full.jpg", quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    bomb = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    cases = [
        (empty, r"empty.jpg: empty file \(0 bytes\)"),
        (text, "notes.jpg: not an image Pillow can read"),
        (truncated, r"truncated.jpg: corrupt or truncated image"),
    ]
    for path, message in cases:
        with pytest.raises(BadImage, match=message):
            load_image(path)
    with pytest.raises(BadImage, match=r"bomb.png: 100x100 exceeds 5,000 pixels \(decompression bomb\?\)"):
        load_image(bomb, max_pixels=5000)


def test_dataset_hands_bad_files_on_and_the_log_warns_once(tmp_path, rgb):
    good = _save(rgb, tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    dataset = FolderDataset([(str(good), 0), (str(bad), 1)], train_transform(32, Preprocessing()))
    images, labels, indices, bad_files = collate_skip_bad([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [0] and indices.tolist() == [0]
    assert bad_files == [BadFile(str(bad), f"{bad}: not an image Pillow can read")]
    log = BadFileLog()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log.add(bad_files)
        log.add(bad_files)
    assert len(caught) == 1 and "bad.png" in str(caught[0].message) and len(log) == 1
    assert dataset.preload().cache[1] == bad_files[0]


def test_stratified_split_is_seeded_and_keeps_proportions(tmp_path, rgb):
    for name, count in (("a", 10), ("b", 20)):
        (tmp_path / name).mkdir()
        for i in range(count):
            _save(rgb, tmp_path / name / f"{i}.png")
    (tmp_path / ".hidden").mkdir()
    split = split_folder(tmp_path, val_fraction=0.2, seed=3)
    assert split.classes == ["a", "b"] and split.source == "split"
    assert sorted(label for _, label in split.val) == [0, 0, 1, 1, 1, 1]
    assert len(split.train) == 24 and not set(split.train) & set(split.val)
    assert split_folder(tmp_path, 0.2, seed=3).val == split.val
    assert split_folder(tmp_path, 0.2, seed=4).val != split.val


def test_train_and_val_folders_are_used_when_present(tmp_path, rgb):
    for part in ("train", "val"):
        for name in ("x", "y"):
            (tmp_path / part / name).mkdir(parents=True)
            _save(rgb, tmp_path / part / name / "1.png")
    split = split_folder(tmp_path)
    assert split.source == "folders" and len(split.train) == 2 and len(split.val) == 2


def test_folder_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder .*missing does not exist"):
        split_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"has no class sub-folders: expected .*/<class name>/<images>"):
        split_folder(tmp_path)


def test_demo_images_are_deterministic_and_labelled():
    first, label = demo.image("train", 13)
    again, _ = demo.image("train", 13)
    other, _ = demo.image("val", 13)
    assert label == 13 % len(demo.CLASSES) and len(demo.CLASSES) >= 6
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert first.size == (112, 112)
    pixels = torch.tensor(np.array(first), dtype=torch.float32)
    assert pixels.std() > 10  # a textured picture, not a flat colour


def test_demo_dataset_is_written_once(tmp_path):
    root = demo.write_dataset(tmp_path, train_per_class=2, val_per_class=1, size=48)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert len(files) == 3 * len(demo.CLASSES) and files[0] == "train/circle/00000.jpg"
    stamp = (root / ".demo-dataset").stat().st_mtime_ns
    demo.write_dataset(tmp_path, train_per_class=2, val_per_class=1, size=48)
    assert (root / ".demo-dataset").stat().st_mtime_ns == stamp
