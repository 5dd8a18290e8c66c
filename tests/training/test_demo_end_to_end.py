"""The README's main job: the demo trains a V3-Small to at least 90% top-1 on the demo validation split."""

import json

import pytest
import torch

from mobilenets.cli import main


@pytest.fixture
def two_threads():
    """`make demo` runs with both cores' threads, and training from scratch follows a different path with
    another thread count (float sums in another order): run it as users do, even under pytest-xdist."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_demo_reaches_90_percent(tmp_path, capsys, two_threads):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0  # `make demo`, as the README runs it
    printed = capsys.readouterr().out
    evaluation = json.loads((out / "eval" / "evaluation.json").read_text())
    assert evaluation["top1"] >= 0.90, evaluation["top1"]
    assert evaluation["samples"] == 600 and evaluation["bad_files"] == []
    assert "1.0 MobileNet-224" in printed and "meets the 90% target" in printed
    for name in ("best.safetensors", "last.safetensors", "metrics.jsonl", "curves.png", "eval/confusion.png"):
        assert (out / name).exists(), name
