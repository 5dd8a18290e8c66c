"""The same loop trains detection (the Detection task): SSDLite on the demo's boxes, bad annotations
reported, COCO mAP as the metric, evaluate / predict through the CLI, exact resume after kill -9, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.cli import main
from mobilenets.data import demo
from mobilenets.nn.detection import SSDLite
from mobilenets.training import RunFiles, config_from_recipe, fit

from small_runs import kill_after, resume_with_cli, train_script, trained_weights

TINY = dict(
    task="detect",
    model="ssdlite_mobilenet_v3_small_050",
    epochs=3,
    batch_size=8,
    image_size=64,
    lr=3e-3,
    workers=0,
    seed=1,
    box_augment="ssd",  # every transform in the path
    demo_images={"train": 24, "val": 8, "size": 64},
)


def test_ssdlite_trains_on_the_demo_boxes(tmp_path):
    out = tmp_path / "run"
    result = fit(config_from_recipe("scratch", data="demo", out=str(out), **TINY), progress=False)
    files = RunFiles(out)
    history = [json.loads(line) for line in files.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert {"train_loss", "val_loss", "val_map", "val_map50"} <= set(history[0])
    assert result.best_top1 == max(r["val_map"] for r in history)  # the best epoch is the best mAP
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0 <= r["val_map"] <= r["val_map50"] <= 1 for r in history)
    report = json.loads(files.report.read_text())
    assert report["task"] == "detection" and report["classes"] == ["background", *demo.CLASSES]
    model, _ = mobilenets.load(files.best)
    assert isinstance(model, SSDLite) and model.class_names == ["background", *demo.CLASSES]
    assert (model.preprocessing.resize, model.preprocessing.crop) == (64, 64)  # the whole image, resized
    with torch.no_grad():
        logits, boxes = model.eval()(torch.randn(1, 3, 64, 64))
    assert logits.shape[-1] == 7 and boxes.shape == (1, logits.shape[1], 4)


def test_bad_annotations_and_images_are_reported_and_the_run_finishes(tmp_path):
    root = demo.write_detection_dataset(tmp_path / "data", train=16, val=4, size=64)
    notes = json.loads((root / "train" / "annotations.json").read_text())
    notes["annotations"][0]["bbox"] = [50, 50, 40, 40]  # past the 64x64 image
    notes["annotations"][1]["category_id"] = 42
    (root / "train" / "annotations.json").write_text(json.dumps(notes))
    (root / "train" / "images" / "00003.jpg").write_bytes(b"\xff\xd8 truncated")
    settings = {k: v for k, v in TINY.items() if k != "demo_images"}
    result = fit(
        config_from_recipe("scratch", data=str(root), out=str(tmp_path / "run"), **settings), progress=False
    )
    reasons = "\n".join(entry["reason"] for entry in result.bad_files)
    first, second = notes["annotations"][0], notes["annotations"][1]
    assert (
        f"annotation {first['id']} of {first['image_id'] - 1:05d}.jpg: box [50, 50, 90, 90] lies outside"
        in reasons
    )
    assert f"annotation {second['id']} of {second['image_id'] - 1:05d}.jpg: unknown category id 42" in reasons
    assert "00003.jpg: not an image Pillow can read" in reasons
    assert result.epochs_run == 3


def test_the_task_comes_from_the_model_name_and_must_fit_it(tmp_path, capsys):
    with pytest.raises(ValueError, match="--task detect does not fit --model mobilenet_v3_small_050"):
        config_from_recipe(
            "scratch", data="demo", out=str(tmp_path), **{**TINY, "model": "mobilenet_v3_small_050"}
        )
    # `train --model ssdlite_...` without --task trains a detector; with --task classify it is refused
    assert (
        main(
            [
                "train",
                "demo",
                "--out",
                str(tmp_path / "r"),
                "--model",
                "ssdlite_mobilenet_v3_small_050",
                "--task",
                "classify",
            ]
        )
        == 2
    )
    assert "--task classify does not fit --model ssdlite_mobilenet_v3_small_050" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"box_augment must be one of \('ssdlite', 'ssd', 'flip'\)"):
        config_from_recipe("scratch", data="demo", out=str(tmp_path), **{**TINY, "box_augment": "mosaic"})


def test_cli_train_evaluate_and_predict_a_detector(tmp_path, capsys):
    out = tmp_path / "run"
    data = demo.write_detection_dataset(tmp_path / "data", train=16, val=6, size=64)
    code = main(
        ["train", str(data), "--out", str(out), "--model", "ssdlite_mobilenet_v3_small_050", "--epochs", "1",
         "--batch-size", "8", "--image-size", "64", "--workers", "0", "--quiet"]
    )  # fmt: skip
    assert code == 0 and "best val mAP@[.5:.95]" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["task"] == "detect"
    assert main(["evaluate", str(out), str(data), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((out / "eval" / "evaluation.json").read_text())
    assert printed.startswith(f"mAP@[.5:.95] {evaluation['map']:.3f}  mAP@.5 {evaluation['map50']:.3f}")
    assert evaluation["samples"] == 6 and [c["class"] for c in evaluation["per_class"]] == list(demo.CLASSES)
    assert all(len(c["precision50"]) == 101 for c in evaluation["per_class"] if c["ap"] is not None)
    assert (out / "eval" / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    images = data / "val" / "images"
    drawn = tmp_path / "drawn"
    args = [
        "predict",
        str(out),
        str(images),
        "--out",
        str(drawn),
        "--workers",
        "0",
        "--score-threshold",
        "0.0",
        "--json",
    ]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["path"] for line in lines] == [str(images / f"{i:05d}.jpg") for i in range(6)]
    assert all(
        d["class"] in demo.CLASSES and 0 <= d["box"][0] <= d["box"][2] <= 64 for d in lines[0]["detections"]
    )
    assert Image.open(drawn / "00000.png").size == (64, 64)
    results = json.loads((drawn / "detections.json").read_text())
    index = json.loads((drawn / "images.json").read_text())
    assert [i["file_name"] for i in index["images"]] == [line["path"] for line in lines]
    assert len(results) == sum(len(line["detections"]) for line in lines)
    assert {r["category_id"] for r in results} <= set(range(1, 7)) and len(index["categories"]) == 6
    assert main(args) == 2  # nothing is replaced
    assert "00000.png exists: predict writes into a new or empty --out folder" in capsys.readouterr().err
    assert main(["evaluate", str(out), str(tmp_path), "--workers", "0"]) == 2
    assert "is not a detection folder" in capsys.readouterr().err


def test_a_killed_detection_run_resumes_to_the_same_weights(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(train_script(tmp_path, TINY, reference))], check=True, timeout=300)
    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(train_script(tmp_path, TINY, run))])
    kill_after(process, lambda: RunFiles(run).last.exists())
    resumed = resume_with_cli(run)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = trained_weights(reference), trained_weights(run)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    history = [json.loads(line) for line in RunFiles(run).metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2] and "val_map" in history[-1]


def test_detection_ddp_on_two_cpu_processes(tmp_path):
    ddp = tmp_path / "ddp"
    script = train_script(tmp_path, TINY, ddp, epochs=2)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        check=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    report = json.loads(RunFiles(ddp).report.read_text())
    assert (
        report["processes"] == 2 and report["replica_max_abs_diff"] == 0.0 and report["task"] == "detection"
    )
    history = [json.loads(line) for line in RunFiles(ddp).metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1] and 0 <= history[-1]["val_map"] <= 1


def test_the_box_augmentation_setting_reaches_the_training_set(tmp_path):
    from torchvision.transforms import v2

    from mobilenets.training.detection import Detection
    from mobilenets.weights.preprocessing import Preprocessing

    root = demo.write_detection_dataset(tmp_path, train=4, val=2, size=64)
    kinds = {}
    for augment in ("ssdlite", "ssd", "flip"):
        config = config_from_recipe(
            "scratch", data=str(root), out=str(tmp_path / "r"), **{**TINY, "box_augment": augment}
        )
        task = Detection()
        train, val = task.datasets(task.split(root, config), config, Preprocessing(resize=64, crop=64))
        kinds[augment] = [type(step).__name__ for step in train.transform.transforms]
        assert not any(isinstance(step, v2.RandomHorizontalFlip) for step in val.transform.transforms)
    assert kinds["flip"][:2] == ["ToImage", "RandomHorizontalFlip"]
    assert kinds["ssdlite"][:3] == ["ToImage", "RandomIoUCrop", "RandomHorizontalFlip"]
    assert kinds["ssd"][:5] == [
        "ToImage",
        "RandomPhotometricDistort",
        "RandomZoomOut",
        "RandomIoUCrop",
        "RandomHorizontalFlip",
    ]


def test_the_detection_demo_runs_end_to_end(tmp_path, capsys):
    """`mobilenets demo --task detect` for one epoch: the scenes, a detector, its COCO evaluation and
    boxes drawn. (The full demo's mAP@.5 and time are measured by benchmarks/demo.py --task detect.)"""
    out = tmp_path / "det"
    code = main(["demo", "--task", "detect", "--out", str(out), "--epochs", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1  # one epoch is far below the 0.8 target, and the exit status says so
    assert "is below the 0.8 target" in printed and "triangle" in printed
    evaluation = json.loads((out / "eval" / "evaluation.json").read_text())
    assert evaluation["samples"] == 200 and evaluation["classes"] == ["background", *demo.CLASSES]
    drawn = sorted(p.name for p in (out / "eval" / "boxes").iterdir())
    assert drawn == ["00000.png", "00001.png", "00002.png", "00003.png", "detections.json", "images.json"]
    assert Image.open(out / "eval" / "boxes" / "00000.png").size == (128, 128)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
