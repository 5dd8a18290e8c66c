"""Image + mask folders: every layout, the bad pairs a stranger's folder holds, joint augmentation."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import demo
from mobilenets.data.folders import BadFile, collate_skip_bad
from mobilenets.data.segmentation import IGNORE_INDEX, JointTransform, MaskDataset, load_mask, scan_masks
from mobilenets.training.task import confusion_matrix, iou_metrics
from mobilenets.weights.preprocessing import Preprocessing


def _pair(folder, stem, size=(40, 32), value=1):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(folder / "images" / f"{stem}.jpg")
    mask = np.zeros(size[::-1], np.uint8)
    mask[:, : size[0] // 2] = value
    Image.fromarray(mask, "L").save(folder / "masks" / f"{stem}.png")


def test_the_three_layouts(tmp_path):
    for split in ("train", "val"):
        for i in range(3):
            _pair(tmp_path / "a" / split, f"{split}{i}")
    (tmp_path / "a" / "classes.txt").write_text("background\nthing\n")
    folders = scan_masks(tmp_path / "a")
    assert (folders.source, len(folders.train), len(folders.val), folders.classes) == (
        "folders",
        3,
        3,
        ["background", "thing"],
    )
    for i in range(10):
        _pair(tmp_path / "b", f"{i:02d}")
    (tmp_path / "b" / "classes.txt").write_text("background\nthing\n")
    split = scan_masks(tmp_path / "b", val_fraction=0.2, seed=3)
    assert (split.source, len(split.train), len(split.val)) == ("split", 8, 2)
    assert not {p for p, _ in split.train} & {p for p, _ in split.val}
    voc = tmp_path / "voc"
    for i in range(4):
        _pair(voc, f"2007_{i:06d}")
    (voc / "images").rename(voc / "JPEGImages")
    (voc / "masks").rename(voc / "SegmentationClass")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000000\n2007_000001\n2007_000002\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n")
    split = scan_masks(voc)
    assert split.source == "voc" and len(split.classes) == 21 and split.classes[15] == "person"
    assert [p.endswith("2007_000003.png") for _, p in split.val] == [True]


def test_a_folder_that_is_not_one_says_what_is_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="is not a segmentation folder: expected train/images"):
        scan_masks(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="has no classes.txt"):
        scan_masks(tmp_path)
    (tmp_path / "classes.txt").write_bytes(b"x\n" * 100_000)  # read only after its size is checked
    with pytest.raises(ValueError, match=r"classes.txt is over 64 KiB: not a list of class names"):
        scan_masks(tmp_path)


def test_bad_pairs_are_reported_with_the_file(tmp_path):
    good, wrong_size, out_of_range, rgb = (tmp_path / name for name in ("good", "size", "range", "rgb"))
    for folder in (good, wrong_size, out_of_range, rgb):
        _pair(folder, "x")
    Image.new("L", (10, 10)).save(wrong_size / "masks" / "x.png")
    Image.fromarray(np.full((32, 40), 7, np.uint8), "L").save(out_of_range / "masks" / "x.png")
    Image.new("RGB", (40, 32)).save(rgb / "masks" / "x.png")
    pairs = [
        (str(f / "images" / "x.jpg"), str(f / "masks" / "x.png"))
        for f in (good, wrong_size, out_of_range, rgb)
    ]
    pairs.append((str(good / "images" / "x.jpg"), str(tmp_path / "missing.png")))
    dataset = MaskDataset(pairs, JointTransform(32, Preprocessing(), train=False), num_classes=3)
    items = [dataset[i] for i in range(len(pairs))]
    assert not isinstance(items[0], BadFile) and items[0][1].shape == (32, 32)
    reasons = {Path_(item.path): item.reason.removeprefix(item.path + ": ") for item in items[1:]}
    assert reasons == {
        "size/masks/x.png": "mask 10x10 differs from image 40x32",
        "range/masks/x.png": "class index 7 out of range (0..2, 255)",
        "rgb/masks/x.png": "mask mode RGB is not an index mask (palette or grayscale PNG)",
        "missing.png": "missing mask",
    }
    images, masks, indices, bad = collate_skip_bad(items)
    assert images.shape == (1, 3, 32, 32) and masks.shape == (1, 32, 32) and len(bad) == 4


def Path_(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-3:]) if parts[-2] == "masks" else parts[-1]


def test_image_and_mask_move_together():
    """The left half of the image is white where the mask says 1: after scale, crop and flip, every
    white pixel still lies on a 1 and every black one on a 0 or on padding (ignored); only the one-pixel
    seam that bilinear resizing blends is neither."""
    pixels = np.zeros((48, 48, 3), np.uint8)
    pixels[:, :24] = 255
    mask = np.zeros((48, 48), np.uint8)
    mask[:, :24] = 1
    transform = JointTransform(32, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)), train=True)
    flips = set()
    for seed in range(12):
        x, y = transform(Image.fromarray(pixels), mask, random.Random(seed))
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.long
        white, black = x[0] > 0.99, x[0] < 0.01
        assert (y[white] == 1).all() and ((y[black] == 0) | (y[black] == IGNORE_INDEX)).all()
        assert (white | black).float().mean() > 0.8
        flips.add(bool(white[:, 0].any()))
    assert flips == {True, False}  # both orientations were drawn


def test_iou_on_a_hand_made_case():
    targets = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, IGNORE_INDEX]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [0, 0, 0, 2]]])
    confusion = confusion_matrix(predicted, targets, 3)
    assert confusion.tolist() == [[3, 1, 0], [1, 2, 0], [0, 0, 0]]
    metrics = iou_metrics(confusion)
    assert metrics["pixel_acc"] == pytest.approx(5 / 7)
    assert metrics["miou"] == pytest.approx((3 / 5 + 2 / 4) / 2)  # class 2 never occurs: left out


def test_the_demo_masks_match_their_images(tmp_path):
    root = demo.write_segmentation_dataset(tmp_path, train=4, val=2, size=64)
    split = scan_masks(root)
    assert split.classes == list(demo.SEGMENTATION_CLASSES) and (len(split.train), len(split.val)) == (4, 2)
    mask = load_mask(split.train[0][1])
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= set(range(len(demo.SEGMENTATION_CLASSES)))
    assert 0 < (mask > 0).mean() < 0.9  # shapes on a background


def test_validation_accumulates_batch_by_batch():
    """Two batches added one at a time give what the whole split gives at once: the pixel-weighted
    loss over labelled pixels, and mIoU from the summed confusion matrix."""
    from mobilenets.training.task import SegmentationValidator

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 6, 6, generator=generator)
    targets = torch.randint(0, 3, (5, 6, 6), generator=generator)
    targets[0, :3] = IGNORE_INDEX
    validator = SegmentationValidator()
    validator.add(logits[:2], targets[:2])
    validator.add(logits[2:], targets[2:])
    whole = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    result = validator.result()
    assert result["loss"] == pytest.approx(float(whole), rel=1e-6)
    assert result["miou"] == pytest.approx(
        iou_metrics(confusion_matrix(logits.argmax(1), targets, 3))["miou"]
    )
    assert SegmentationValidator().result()["miou"] != SegmentationValidator().result()["miou"]  # NaN
