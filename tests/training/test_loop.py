"""Training: exact resume after kill -9, DDP on 2 CPU processes, run files, recipes, bad files."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from mobilenets.data import demo
from mobilenets.training import GlobalBatchSampler, RunFiles, TrainConfig, config_from_recipe, fit, lr_at

from small_runs import kill_after, resume_with_cli, train_script, trained_weights

TINY = dict(
    model="mobilenet_v3_small_050",
    epochs=4,
    batch_size=8,
    image_size=32,
    workers=0,
    seed=1,
    demo_images={"train_per_class": 4, "val_per_class": 2, "size": 48},
)


@pytest.mark.parametrize("moment", ["after_first_checkpoint", "before_any_checkpoint"])
def test_kill_9_and_resume_gives_the_same_final_weights(tmp_path, moment):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(train_script(tmp_path, TINY, reference))], check=True, timeout=300)

    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(train_script(tmp_path, TINY, run))])
    files = RunFiles(run)
    if moment == "after_first_checkpoint":
        kill_after(process, lambda: files.last.exists())
        assert files.last.exists()
    else:
        kill_after(process, lambda: files.config.exists())
    resumed = resume_with_cli(run)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = trained_weights(reference), trained_weights(run)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    history = [json.loads(line) for line in files.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, str(train_script(tmp_path, TINY, single, epochs=2, batch_size=16))],
        check=True,
        timeout=300,
    )
    ddp = tmp_path / "ddp"
    script = train_script(tmp_path, TINY, ddp, epochs=2, batch_size=16)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        check=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    report = json.loads(RunFiles(ddp).report.read_text())
    assert report["processes"] == 2 and report["replica_max_abs_diff"] == 0.0  # replicas identical
    # Same global batches; only BatchNorm's per-process batch statistics differ, so the weights agree closely.
    init = {
        k: v
        for k, v in __import__("mobilenets")
        .create_model("mobilenet_v3_small_050", num_classes=8, bn_momentum=0.1)
        .state_dict()
        .items()
    }
    one, two = trained_weights(single), trained_weights(ddp)
    keys = [k for k in one if k.endswith(".weight") and k in init and one[k].ndim == 4]
    update = torch.cat([(one[k] - init[k]).flatten() for k in keys]).norm()
    difference = torch.cat([(one[k] - two[k]).flatten() for k in keys]).norm()
    assert difference < 0.25 * update, (float(difference), float(update))
    assert not any(p.name.startswith("rank") for p in ddp.iterdir())


def test_global_batches_are_the_same_for_any_number_of_processes():
    single = list(GlobalBatchSampler(20, 8, seed=5))
    halves = [list(GlobalBatchSampler(20, 8, seed=5, rank=r, world=2)) for r in range(2)]
    assert len(single) == 16 and all(len(h) == 8 for h in halves)
    for step in range(2):
        merged = halves[0][step * 4 : step * 4 + 4] + halves[1][step * 4 : step * 4 + 4]
        assert merged == single[step * 8 : step * 8 + 8]
    assert list(GlobalBatchSampler(20, 8, seed=6)) != single


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = fit(config_from_recipe("scratch", data="demo", out=str(out), **TINY), progress=False)
    return out, result


def test_run_folder_has_checkpoints_metrics_curves_and_report(tiny_run):
    out, result = tiny_run
    files = RunFiles(out)
    for path in (files.config, files.last, files.best, files.metrics, files.curves, files.report):
        assert path.exists(), path
    assert files.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = [json.loads(line) for line in files.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert {"train_loss", "val_top1", "val_top5", "lr", "images_per_s"} <= set(history[0])
    assert result.best_top1 == max(r["val_top1"] for r in history)
    import mobilenets
    import mobilenets.data.demo

    model, _ = mobilenets.load(files.best)  # the best checkpoint is an ordinary native checkpoint
    assert model.class_names == list(mobilenets.data.demo.CLASSES)
    report = json.loads(files.report.read_text())
    classes = len(mobilenets.data.demo.CLASSES)
    assert report["train_samples"] == 4 * classes and report["val_samples"] == 2 * classes
    assert report["bad_files"] == []


def test_a_bad_file_is_skipped_reported_and_the_run_finishes(tmp_path):
    root = demo.write_dataset(tmp_path / "data", train_per_class=3, val_per_class=1, size=48)
    (root / "train" / "star" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "train" / "star" / "empty.png").write_bytes(b"")
    settings = {**TINY, "epochs": 1, "batch_size": 4}  # 20 files, 5 full batches: every file is visited
    config = config_from_recipe("scratch", data=str(root), out=str(tmp_path / "run"), **settings)
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = fit(config, progress=False)
    assert sorted(os.path.basename(b["path"]) for b in result.bad_files) == ["broken.jpg", "empty.png"]
    report = json.loads(RunFiles(tmp_path / "run").report.read_text())
    assert len(report["bad_files"]) == 2 and "empty file (0 bytes)" in json.dumps(report)


def test_recipes_and_config_errors():
    paper = config_from_recipe("paper", data="d", out="o")
    assert (paper.optimizer, paper.schedule, paper.ema_decay, paper.bn_momentum) == (
        "rmsprop",
        "step",
        0.9999,
        0.01,
    )
    finetune = config_from_recipe("finetune", data="d", out="o", lr=3e-4)
    assert (finetune.optimizer, finetune.schedule, finetune.lr) == ("adamw", "cosine", 3e-4)
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of finetune, paper, scratch"):
        config_from_recipe("fast", data="d", out="o")
    with pytest.raises(
        ValueError, match=r"optimizer must be one of \('rmsprop', 'adamw', 'sgd'\), got 'lamb'"
    ):
        TrainConfig(data="d", out="o", optimizer="lamb")
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        TrainConfig(data="d", out="o", image_size=16)
    with pytest.raises(ValueError, match=r"scale_range must be \(low, high\) with 0 < low <= high"):
        TrainConfig(data="d", out="o", scale_range=(2.0, 0.5))


def test_learning_rate_schedule():
    config = TrainConfig(data="d", out="o", lr=1.0, epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_at(config, 0, 100) == pytest.approx(0.01)
    assert lr_at(config, 100, 100) == pytest.approx(1.0)
    assert lr_at(config, 550, 100) == pytest.approx(0.5)
    assert lr_at(config, 1000, 100) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(
        data="d", out="o", lr=1.0, schedule="step", decay_rate=0.5, decay_epochs=2, warmup_epochs=0
    )
    assert [lr_at(step, s, 10) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_frozen_backbone_trains_only_the_classifier(tmp_path):
    out = tmp_path / "frozen"
    config = config_from_recipe(
        "finetune", data="demo", out=str(out), freeze_backbone=True, **{**TINY, "epochs": 1}
    )
    fit(config, progress=False)
    import mobilenets

    trained, _ = mobilenets.load(RunFiles(out).last)
    torch.manual_seed(TINY["seed"])  # fit() seeds like this before it builds the model
    fresh = mobilenets.create_model("mobilenet_v3_small_050", num_classes=len(mobilenets.data.demo.CLASSES))
    torch.testing.assert_close(trained.stem.conv.weight, fresh.stem.conv.weight)
    torch.testing.assert_close(trained.stem.bn.running_mean, fresh.stem.bn.running_mean)
    assert not torch.equal(trained.classifier.weight, fresh.classifier.weight)


def test_ema_weights_are_deployed_and_resume_exactly(tmp_path, monkeypatch):
    import mobilenets.training.loop as train_module

    settings = {**TINY, "epochs": 2, "ema_decay": 0.5}
    fit(config_from_recipe("scratch", data="demo", out=str(tmp_path / "a"), **settings), progress=False)
    plot = train_module.plot_curves
    calls = []

    def interrupt_after_first_epoch(history, path, *metric):
        plot(history, path, *metric)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # after the epoch-0 checkpoint is on disk

    monkeypatch.setattr(train_module, "plot_curves", interrupt_after_first_epoch)
    config = config_from_recipe("scratch", data="demo", out=str(tmp_path / "b"), **settings)
    with pytest.raises(KeyboardInterrupt):
        fit(config, progress=False)
    fit(config, resume=True, progress=False)
    expected, got = (
        load_file(str(tmp_path / "a" / "last.safetensors")),
        load_file(str(tmp_path / "b" / "last.safetensors")),
    )
    assert expected.keys() == got.keys()
    assert int(got["train/ema/n_averaged"]) == 2 * len(demo.CLASSES) * 4 // TINY["batch_size"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    # The deployable weights are the EMA's, not the raw training weights.
    assert not torch.equal(got["stem.conv.weight"], got["train/model/stem.conv.weight"])


def test_a_moved_run_resumes_where_it_is_now(tiny_run, tmp_path):
    """config.json records the first --out; --resume of a copy must write into the copy, never the original."""
    import shutil

    original, _ = tiny_run
    before = {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()}
    copy = tmp_path / "copied"
    shutil.copytree(original, copy)
    recorded = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**recorded, "epochs": 5}))  # one more epoch to run
    resumed = subprocess.run(
        [sys.executable, "-m", "mobilenets", "train", "--resume", str(copy), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()} == before
    history = [json.loads(line) for line in RunFiles(copy).metrics.read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)


def test_a_fresh_run_never_writes_over_a_folder(tiny_run, tmp_path, capsys):
    from mobilenets.cli import main

    finished, _ = tiny_run
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    assert main(["train", "demo", "--out", str(finished), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "holds an earlier run" in error and f"--resume {finished}" in error and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before

    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text('{"my": "settings"}')
    for extra in ([], ["--overwrite"]):
        assert main(["train", "demo", "--out", str(user), "--quiet", *extra]) == 2
        assert "is not empty and is not a run folder (it holds config.json)" in capsys.readouterr().err
    assert (user / "config.json").read_text() == '{"my": "settings"}' and len(list(user.iterdir())) == 1


def test_the_recipe_follows_whether_weights_are_given(tmp_path, capsys, monkeypatch):
    """From scratch the scratch recipe (the fine-tuning one's heavy crops and TrivialAugment need
    pretrained features), with --weights the finetune one; the choice is printed."""
    import mobilenets.cli as cli
    import mobilenets.training.loop as train_module

    chosen = []
    monkeypatch.setattr(
        train_module,
        "fit",
        lambda config, **_: chosen.append(config) or (_ for _ in ()).throw(ValueError("stop")),
    )
    cli.main(["train", "demo", "--out", str(tmp_path / "a")])
    assert chosen[-1].recipe == "scratch" and chosen[-1].augment == "none"
    assert "recipe: scratch (no --weights: training from scratch" in capsys.readouterr().out
    cli.main(["train", "demo", "--out", str(tmp_path / "b"), "--weights", "torchvision"])
    assert chosen[-1].recipe == "finetune" and chosen[-1].augment == "trivialaugment"
    cli.main(["train", "demo", "--out", str(tmp_path / "c"), "--recipe", "paper"])
    assert chosen[-1].recipe == "paper"


def test_ddp_reports_the_bad_files_of_every_process(tmp_path):
    """Each process meets the bad files of its own shard; report.json lists all of them."""
    root = demo.write_dataset(tmp_path / "data", train_per_class=3, val_per_class=1, size=48)
    names = [f"broken{i}.jpg" for i in range(len(demo.CLASSES))]  # 18 + 6 files: 6 batches of 4 visit all
    for i, name in enumerate(names):
        (root / "train" / demo.CLASSES[i] / name).write_bytes(b"\xff\xd8\xff garbage")
    script = tmp_path / "ddp_bad.py"
    settings = {**TINY, "epochs": 1, "batch_size": 4, "seed": 3}
    script.write_text(
        textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        from mobilenets.training import config_from_recipe, fit
        fit(config_from_recipe("scratch", data={str(root)!r}, out={str(tmp_path / "run")!r}, **{settings!r}), progress=False)
    """)
    )
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        check=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    report = json.loads(RunFiles(tmp_path / "run").report.read_text())
    assert sorted(os.path.basename(b["path"]) for b in report["bad_files"]) == names
