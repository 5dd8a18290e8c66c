"""Detection folders: COCO-format JSON and Pascal VOC read with bad annotations skipped and named, hostile
files refused, SSD's augmentation keeping boxes on their objects, padded batches, the demo's scenes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import demo
from mobilenets.data.detection import (
    DetectionDataset,
    collate_detection,
    detection_transform,
    scan_detection,
)
from mobilenets.data.folders import BadFile
from mobilenets.weights.preprocessing import Preprocessing

PRE = Preprocessing(resize=64, crop=64)


def _image(path, size=(80, 60), colour=(40, 90, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _coco(folder, images, annotations, categories=({"id": 3, "name": "cat"}, {"id": 7, "name": "dog"})):
    folder.mkdir(parents=True, exist_ok=True)
    document = {"images": images, "annotations": annotations, "categories": list(categories)}
    (folder / "annotations.json").write_text(json.dumps(document))


def _ann(i, image_id, category, bbox, **extra):
    return {"id": i, "image_id": image_id, "category_id": category, "bbox": bbox, **extra}


def test_coco_folders_skip_bad_annotations_and_name_them(tmp_path):
    for name in ("a.jpg", "b.jpg", "empty.jpg"):
        _image(tmp_path / "train" / "images" / name)
    _image(tmp_path / "val" / "images" / "v.jpg")
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 80, "height": 60},
        {"id": 2, "file_name": "b.jpg", "width": 80, "height": 60},
        {"id": 3, "file_name": "empty.jpg", "width": 80, "height": 60},
        {"id": 4, "file_name": "gone.jpg", "width": 80, "height": 60},
    ]
    annotations = [
        _ann(1, 1, 3, [10, 5, 20, 30]),  # good: cat
        _ann(2, 1, 7, [0, 0, 80, 60]),  # good: dog, the whole image
        _ann(3, 1, 3, [10, 10, 0, 5]),  # zero width
        _ann(4, 2, 3, [-30, 5, 10, 10]),  # left of the image
        _ann(5, 2, 3, [70, 5, 30, 10]),  # past the right edge
        _ann(6, 2, 99, [1, 1, 5, 5]),  # unknown category
        _ann(7, 2, 7, [5, 5, 10, 10], iscrowd=1),  # crowd: not trained on, not an error
        _ann(8, 2, 7, [79.5, 0, 1, 60.5]),  # 0.5 px past the edges: clipped, kept
        _ann(9, 4, 3, [1, 1, 5, 5]),  # its image file is missing
    ]
    _coco(tmp_path / "train", images, annotations)
    _coco(tmp_path / "val", [{"id": 1, "file_name": "v.jpg", "width": 80, "height": 60}], [])
    split = scan_detection(tmp_path)
    assert split.source == "coco" and split.classes == ["background", "cat", "dog"]
    by_name = {r.path.rsplit("/", 1)[1]: r for r in split.train}
    assert sorted(by_name) == ["a.jpg", "b.jpg", "empty.jpg"]
    assert by_name["a.jpg"].boxes == [[10, 5, 30, 35], [0, 0, 80, 60]] and by_name["a.jpg"].labels == [1, 2]
    assert by_name["b.jpg"].boxes == [[79.5, 0, 80, 60]] and by_name["b.jpg"].labels == [2]
    assert by_name["empty.jpg"].boxes == [] and len(split.val) == 1  # images without boxes are kept
    reasons = [p.reason for p in split.problems]
    assert len(reasons) == 5, reasons
    train_file = str(tmp_path / "train" / "annotations.json")
    assert reasons[0] == f"{tmp_path / 'train' / 'images' / 'gone.jpg'}: missing image file"
    assert reasons[1:] == [
        f"{train_file}: annotation 3 of a.jpg: box [10, 10, 10, 15] has zero or negative size",
        f"{train_file}: annotation 4 of b.jpg: box [-30, 5, -20, 15] lies outside the 80x60 image",
        f"{train_file}: annotation 5 of b.jpg: box [70, 5, 100, 15] lies outside the 80x60 image",
        f"{train_file}: annotation 6 of b.jpg: unknown category id 99",
    ]


def test_hostile_coco_files_are_refused_or_skipped(tmp_path):
    _image(tmp_path / "images" / "ok.jpg")
    _image(tmp_path / "images" / "ok2.jpg")
    outside = tmp_path.parent / "secret.jpg"
    _image(outside)
    images = [
        {"id": 1, "file_name": "ok.jpg"},
        {"id": 2, "file_name": "../secret.jpg"},  # a name that climbs out of images/
        {"id": 3, "file_name": str(outside)},  # an absolute path
        {"id": "4", "file_name": "ok.jpg"},  # not an integer id
        {"id": 5, "file_name": "ok2.jpg"},
        {"id": 6, "file_name": "ok2.jpg", "width": float("inf"), "height": 10},  # JSON's Infinity
    ]
    annotations = [
        _ann(1, 1, 3, [1, 1, "5", 5]),  # a string in the box
        _ann(2, 1, 3, [1, 1, float("nan"), 5]),
        _ann(5, 1, 3, [1, 1, float("inf"), 5]),
        _ann(3, 1, 3, [1, 1, 5]),
        _ann(4, 1, 3, [1, 1, 5, 5]),
    ]
    _coco(tmp_path, images, annotations)
    split = scan_detection(tmp_path, val_fraction=0.5)
    records = sorted(split.train + split.val, key=lambda r: r.image_id)
    assert [r.path for r in records] == [str(tmp_path / "images" / n) for n in ("ok.jpg", "ok2.jpg")]
    assert records[0].boxes == [[1, 1, 6, 6]] and records[1].boxes == []
    reasons = "\n".join(p.reason for p in split.problems)
    assert "file_name '../secret.jpg' points outside" in reasons
    assert f"file_name '{outside}' points outside" in reasons
    assert "an image entry without an integer id" in reasons
    assert "bbox value is not a number ('5')" in reasons
    assert "bbox value is not a number (nan)" in reasons
    assert "bbox value is not a number (inf)" in reasons
    assert "width is not a number (inf)" in reasons
    assert "bbox must be [x, y, width, height]" in reasons
    (tmp_path / "annotations.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"annotations.json is not JSON"):
        scan_detection(tmp_path)
    (tmp_path / "annotations.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match=r"holds lists 'images', 'annotations' and 'categories'"):
        scan_detection(tmp_path)


def _voc_xml(filename, objects, size=(80, 60)):
    parts = [f"<annotation><filename>{filename}</filename>"]
    parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        x1, y1, x2, y2 = box
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def test_voc_folders_with_their_class_names_lists_and_bad_files(tmp_path):
    notes = tmp_path / "Annotations"
    notes.mkdir()
    for stem in ("0001", "0002", "0003"):
        _image(tmp_path / "JPEGImages" / f"{stem}.jpg")
    (notes / "0001.xml").write_text(
        _voc_xml("0001.jpg", [("dog", (5, 5, 40, 50), 0), ("cat", (1, 1, 9, 9), 1)])
    )
    (notes / "0002.xml").write_text(
        _voc_xml("0002.jpg", [("person", (5, 5, 4, 50), 0), ("horse", (0, 0, 80, 60), 0)])
    )
    (notes / "0003.xml").write_text(_voc_xml("0003.jpg", []))
    (notes / "0004.xml").write_text(_voc_xml("0004.jpg", [("dog", (1, 1, 5, 5), 0)]))  # no image
    (notes / "0005.xml").write_text("<annotation><filename>")  # truncated
    lists = tmp_path / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("0001\n0002\n")
    (lists / "val.txt").write_text("0003\n")
    split = scan_detection(tmp_path)
    assert split.source == "voc" and len(split.classes) == 21  # every name is one of VOC's 20
    assert [r.path.rsplit("/", 1)[1] for r in split.train] == ["0001.jpg", "0002.jpg"]
    assert split.train[0].labels == [split.classes.index("dog")]  # the difficult cat is left out
    assert split.train[1].boxes == [[0, 0, 80, 60]] and split.val[0].boxes == []
    reasons = "\n".join(p.reason for p in split.problems)
    assert f"{notes / '0002.xml'}: box [5, 5, 4, 50] has zero or negative size" in reasons
    assert (
        f"{tmp_path / 'JPEGImages' / '0004.jpg'}: missing image file (named by {notes / '0004.xml'})"
        in reasons
    )
    assert f"{notes / '0005.xml'}: not valid XML" in reasons
    # a labelImg-style folder of one's own classes: the names found, sorted, unless classes.txt lists them
    (notes / "0003.xml").write_text(_voc_xml("0003.jpg", [("widget", (1, 1, 5, 5), 0)]))
    assert scan_detection(tmp_path).classes[1:] == sorted(["dog", "cat", "person", "horse", "widget"])
    (tmp_path / "classes.txt").write_text("widget\ndog\n")
    split = scan_detection(tmp_path)
    assert split.classes == ["background", "widget", "dog"]
    assert "unknown class 'horse'" in "\n".join(p.reason for p in split.problems)
    (tmp_path / "classes.txt").write_text("widget\n" * 20_000)  # 140 KiB: not a list of names
    with pytest.raises(ValueError, match=r"classes.txt is over 64 KiB: not a list of class names"):
        scan_detection(tmp_path)


def test_voc_xml_bombs_and_external_entities_are_refused(tmp_path):
    notes = tmp_path / "Annotations"
    notes.mkdir()
    for stem in ("a", "b", "c", "d", "f"):
        _image(tmp_path / "JPEGImages" / f"{stem}.jpg")
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("dog")
    laughs = '<!DOCTYPE a [<!ENTITY l "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10 if i else "&l;" * 10}">' for i in range(12)
    )
    (notes / "a.xml").write_text(
        laughs + "]><annotation><filename>a.jpg</filename><object><name>&l11;</name></object></annotation>"
    )
    (notes / "b.xml").write_text(
        f'<!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]><annotation><filename>b.jpg</filename>'
        "<object><name>&x;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    (notes / "c.xml").write_text(_voc_xml("../../etc/passwd", []))
    (notes / "d.xml").write_text(_voc_xml("d.jpg", [("dog", (1, 1, 5, 5), 0)]))
    (notes / "f.xml").write_text(_voc_xml("f.jpg", []))
    (notes / "g.xml").write_text(_voc_xml("f.jpg", [], size=("inf", 60)))
    (notes / "h.xml").write_text(_voc_xml("f.jpg", [("dog", (1, 1, "inf", 5), 0)]))
    (notes / "e.xml").write_bytes(b"<a>" + b" " * (1 << 20) + b"</a>")
    split = scan_detection(tmp_path)
    records = {r.path.rsplit("/", 1)[1]: r for r in split.train + split.val}
    assert "a.jpg" not in records and "c.jpg" not in records
    assert records["d.jpg"].labels == [split.classes.index("dog")]
    assert "b.jpg" not in records  # the external entity is never fetched: the file is refused
    reasons = "\n".join(p.reason for p in split.problems)
    assert f"{notes / 'a.xml'}: not valid XML" in reasons  # expat refuses the entity expansion
    assert f"{notes / 'b.xml'}: not valid XML (undefined entity" in reasons
    assert "'../../etc/passwd' points outside" in reasons
    assert f"{notes / 'e.xml'}: over 1024 KiB" in reasons
    assert f"{notes / 'g.xml'}: bad object in the annotation (width is not a number (inf))" in reasons
    assert f"{notes / 'h.xml'}: box [1, 1, inf, 5] is not finite" in reasons


def test_layouts_and_what_is_not_a_detection_folder(tmp_path):
    demo.write_detection_dataset(tmp_path / "demo", train=6, val=2, size=64)
    split = scan_detection(tmp_path / "demo")
    assert (split.source, len(split.train), len(split.val)) == ("coco", 6, 2)
    assert split.classes == ["background", *demo.CLASSES] and split.problems == []
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for part, target in (("train", "train2017"), ("val", "val2017")):
        (coco / target).symlink_to(tmp_path / "demo" / part / "images")
        (coco / "annotations" / f"instances_{target}.json").write_bytes(
            (tmp_path / "demo" / part / "annotations.json").read_bytes()
        )
    assert [len(s) for s in (scan_detection(coco).train, scan_detection(coco).val)] == [6, 2]
    with pytest.raises(ValueError, match="is not a detection folder: expected train/annotations.json"):
        scan_detection(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_detection(tmp_path / "nowhere")


def test_augmented_boxes_stay_on_their_objects(tmp_path):
    """A white square on black: after every training transform the box still frames the white pixels."""
    path = tmp_path / "square.png"
    pixels = np.zeros((100, 120, 3), np.uint8)
    pixels[30:70, 40:90] = 255
    Image.fromarray(pixels).save(path)
    from mobilenets.data.detection import Annotated

    record = Annotated(str(path), [[40.0, 30.0, 90.0, 70.0]], [1], 1, 120, 100)
    pre = Preprocessing(resize=64, crop=64, mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(0)
    for augment in ("ssdlite", "ssd", "flip"):
        dataset = DetectionDataset([record], detection_transform(64, pre, train=True, augment=augment))
        for _ in range(12):
            x, rows, _ = dataset[0]
            assert x.shape == (3, 64, 64) and rows.shape[1] == 5
            if len(rows) == 0:
                continue  # a crop that missed the square: SSD's crop may leave no object
            x1, y1, x2, y2 = rows[0, 1:].round().int().tolist()
            white = x[:, y1:y2, x1:x2].mean(0) if augment == "flip" else x.mean(0)[y1:y2, x1:x2]
            assert float(white.mean()) > 0.6, (augment, rows)
    x, rows, _ = DetectionDataset([record], detection_transform(64, pre, train=False))[0]
    assert rows.tolist() == [pytest.approx([1.0, 40 * 64 / 120, 30 * 64 / 100, 90 * 64 / 120, 70 * 64 / 100])]


def test_batches_pad_boxes_and_bad_images_travel_as_records(tmp_path):
    root = demo.write_detection_dataset(tmp_path, train=4, val=1, size=64)
    split = scan_detection(root)
    (root / "train" / "images" / "00001.jpg").write_bytes(b"not a jpeg")
    dataset = DetectionDataset(split.train, detection_transform(64, PRE, train=False))
    items = [dataset[i] for i in range(4)]
    assert isinstance(items[1], BadFile) and "00001.jpg" in items[1].reason
    images, targets, indices, bad = collate_detection(items)
    counts = [len(split.train[i].boxes) for i in (0, 2, 3)]
    assert images.shape == (3, 3, 64, 64) and targets.shape == (3, max(counts), 5)
    assert indices.tolist() == [0, 2, 3] and bad == [items[1]]
    for row, count in enumerate(counts):
        assert (targets[row, :count, 0] >= 1).all() and (targets[row, count:] == -1).all()
    Image.new("RGB", (32, 32)).save(root / "train" / "images" / "00002.jpg")
    assert "the image is 32x32, its annotation says 64x64" in dataset[2].reason
    assert collate_detection([items[1]]) == (None, None, None, [items[1]])


def test_demo_scenes_are_deterministic_in_bounds_and_sometimes_overlap():
    overlapping, counts = 0, set()
    for index in range(60):
        first = demo.render_detection_scene(np.random.default_rng([0, index]), 96)
        again = demo.render_detection_scene(np.random.default_rng([0, index]), 96)
        assert np.array_equal(np.asarray(first[0]), np.asarray(again[0])) and first[1:] == again[1:]
        image, boxes, labels = first
        assert image.size == (96, 96) and 1 <= len(boxes) <= 3 and len(labels) == len(boxes)
        counts.add(len(boxes))
        assert all(0 <= label < len(demo.CLASSES) for label in labels)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96 and x2 - x1 >= 0.1 * 96
        boxes_t = torch.tensor(boxes)
        from torchvision.ops import box_iou

        iou = box_iou(boxes_t, boxes_t).fill_diagonal_(0)
        overlapping += bool((iou > 0).any())
    assert counts == {1, 2, 3} and overlapping >= 10
