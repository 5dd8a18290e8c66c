"""evaluate / predict on a tiny trained run: metrics agree with a direct forward pass; bad files don't stop."""

import csv
import io
import json

import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.data import demo
from mobilenets.data.folders import BadFile, load_image
from mobilenets.training import config_from_recipe, fit
from mobilenets.training.evaluate import evaluate, predict

TINY = dict(
    model="mobilenet_v3_small_050",
    epochs=2,
    batch_size=8,
    image_size=32,
    workers=0,
    seed=2,
    eval_crop=1.0,
    demo_images={"train_per_class": 4, "val_per_class": 3, "size": 48},
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    fit(config_from_recipe("scratch", data="demo", out=str(out), **TINY), progress=False)
    return out


def test_evaluate_matches_a_direct_forward_pass(run, tmp_path):
    result = evaluate(run, "demo", out=tmp_path / "eval", workers=0)
    model, transform = mobilenets.load(run / "best.safetensors")
    val = run / "demo-data" / "val"
    correct = total = 0
    with torch.no_grad():
        for label, name in enumerate(demo.CLASSES):
            for path in sorted((val / name).iterdir()):
                logits = model.eval()(transform(load_image(path))[None])
                correct += int(logits.argmax(1).item() == label)
                total += 1
    assert result.samples == total == 3 * len(demo.CLASSES)
    assert result.top1 == pytest.approx(correct / total)
    confusion = torch.tensor(result.confusion)
    assert confusion.sum() == total and confusion.trace() == correct
    for i, row in enumerate(result.per_class):
        assert row["class"] == demo.CLASSES[i] and row["support"] == 3
        assert row["recall"] == pytest.approx(float(confusion[i, i]) / 3)
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["confusion"] == result.confusion and saved["classes"] == list(demo.CLASSES)
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_refuses_classes_the_model_does_not_know(run, tmp_path):
    (tmp_path / "val" / "pentagon").mkdir(parents=True)
    demo.image("val", 0)[0].save(tmp_path / "val" / "pentagon" / "a.png")
    with pytest.raises(
        ValueError, match="has classes the model does not know: pentagon; the model's classes: circle"
    ):
        evaluate(run, tmp_path / "val", workers=0)


def test_predict_streams_and_reports_bad_files(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        demo.image("val", i)[0].save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"nope")
    items = list(predict(run, images, top_k=3, batch_size=2, workers=0))
    bad = [i for i in items if isinstance(i, BadFile)]
    good = [i for i in items if not isinstance(i, BadFile)]
    assert [b.path.rsplit("/", 1)[-1] for b in bad] == ["broken.png"]
    assert sorted(p.path.rsplit("/", 1)[-1] for p in good) == ["0.png", "1.png", "2.png"]
    for prediction in good:
        probabilities = [p for _, p in prediction.top]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-6 and {c for c, _ in prediction.top} <= set(demo.CLASSES)


def test_cli_predict_json_and_csv(run, tmp_path, capsys):
    image = tmp_path / "one.png"
    demo.image("val", 4)[0].save(image)
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json", "--workers", "0"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["path"] == str(image) and len(line["top"]) == 2
    assert main(["predict", str(run), str(image), "--top-k", "2", "--csv", "--workers", "0"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "class1", "prob1", "class2", "prob2"] and rows[1][0] == str(image)


def test_cli_evaluate_and_train_errors(run, capsys):
    assert main(["evaluate", str(run), "demo", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and f"wrote {run}/eval/evaluation.json" in out
    assert main(["train", "demo"]) == 2
    assert "train needs DATA and --out RUN (or --resume RUN)" in capsys.readouterr().err
    assert main(["evaluate", str(run / "nothing"), "demo"]) == 2
    assert "does not exist (expected a run folder or a .safetensors checkpoint)" in capsys.readouterr().err
    assert main(["train", "--resume", str(run / "missing")]) == 2
    assert "is not a run folder (no config.json)" in capsys.readouterr().err
