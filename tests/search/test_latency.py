"""`mobilenets latency` (issue 17, part 1): the published grid, its front and budget, measured on a real
backend with a cache that makes a re-run instant and an interrupted run resume."""

import json

import pytest

from mobilenets.cli import main
from mobilenets.search import (
    GridPoint,
    Measurement,
    measure_grid,
    pareto_front,
    published_grid,
    within_budget,
)
from mobilenets.search import latency as latency_module


def test_the_grid_is_the_papers_cells():
    grid = published_grid()
    assert len(grid) == 57  # 22 variants at 224, V1 4x3 and V2 4x4 smaller sizes, V3 Table 9's 96-192 rows
    found = {p.label: (p.top1, p.source) for p in grid}
    assert found["mobilenet_v1_100@224"] == (70.6, "V1 Table 6")
    assert found["mobilenet_v1_100@128"] == (64.4, "V1 Table 7")
    assert found["mobilenet_v2_035@96"] == (45.5, "TF-Slim mobilenet/README.md (V2)")
    assert found["mobilenet_v3_small_100@96"] == (51.7, "V3 Table 9")
    assert "mobilenet_v3_small_100@256" not in found  # beyond 224: not on the grid
    chosen = published_grid(families=["mobilenet_v3_large"], resolutions=[96, 224])
    assert [p.label for p in chosen][:2] == ["mobilenet_v3_large_035@224", "mobilenet_v3_large_050@224"]
    assert {p.resolution for p in chosen} == {96, 224} and len(chosen) == 6


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown family 'mobilenet_v4'; choose from mobilenet_v1, mobilenet_v2"
    ):
        published_grid(families=["mobilenet_v4"])
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'"):
        published_grid(models=["resnet50"])
    with pytest.raises(ValueError, match="no published variant matches"):
        published_grid(models=["mobilenet_v3_small_035"], resolutions=[96])


def point(name, resolution, top1, ms):
    return Measurement(name, resolution, top1, "test", ms, 5)


def test_the_front_and_the_budget():
    measured = [
        point("mobilenet_v2_035", 96, 45.5, 1.0),
        point("mobilenet_v2_050", 96, 51.2, 1.5),
        point("mobilenet_v1_025", 224, 50.6, 1.6),  # slower and less accurate than v2_050@96: off the front
        point("mobilenet_v2_100", 224, 72.0, 9.0),
        point("mobilenet_v3_small_100", 224, 67.5, 3.0),
    ]
    assert [m.label for m in pareto_front(measured)] == [
        "mobilenet_v2_035@96",
        "mobilenet_v2_050@96",
        "mobilenet_v3_small_100@224",
        "mobilenet_v2_100@224",
    ]
    assert within_budget(measured, 3.0).label == "mobilenet_v3_small_100@224"
    assert within_budget(measured, 8.99).label == "mobilenet_v3_small_100@224"
    assert within_budget(measured, 9.0).label == "mobilenet_v2_100@224"
    assert within_budget(measured, 0.5) is None


def test_measurements_are_cached_and_an_interrupted_run_resumes(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    points = published_grid(models=["mobilenet_v2_035"], resolutions=[96, 128])
    built = []
    make_runner = latency_module.make_runner

    def counting(backend, p, *args):
        built.append(p.label)
        if p.resolution == 128 and len(built) == 2:
            raise KeyboardInterrupt  # killed while building the second network
        return make_runner(backend, p, *args)

    monkeypatch.setattr(latency_module, "make_runner", counting)
    options = dict(backend="onnxruntime", rounds=2, runs=2, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(KeyboardInterrupt):
        measure_grid(points, **options)
    exports = sorted(p.name for p in (tmp_path / "cache").glob("*-exports/*"))
    assert exports == ["mobilenet_v2_035@96.onnx"]  # the finished export is kept for the resumed run
    first = measure_grid(points, **options)
    assert built == [p.label for p in points] * 2
    assert [m.label for m in first] == ["mobilenet_v2_035@96", "mobilenet_v2_035@128"]
    assert all(m.rounds == 2 and m.median_ms > 0 for m in first)
    assert first[0].median_ms < first[1].median_ms * 1.5  # 96 px is not slower than 128 px by far
    again = measure_grid(points, **options)  # from the cache: nothing is built
    assert again == first and len(built) == 4
    cache = json.loads(next((tmp_path / "cache").glob("latency-onnxruntime-*.json")).read_text())
    assert cache["key"]["backend"] == "onnxruntime" and cache["key"]["threads"] == 1
    assert set(cache["points"]) == {"mobilenet_v2_035@96", "mobilenet_v2_035@128"}
    measure_grid(points, **options | {"rounds": 3})  # more rounds than cached: measured again
    assert len(built) == 6


def test_cli_writes_the_table_and_figure_and_names_the_best_within_budget(tmp_path, capsys, monkeypatch):
    cached = [
        GridPoint("mobilenet_v2_035", 96, 45.5, "TF-Slim mobilenet/README.md (V2)"),
        GridPoint("mobilenet_v2_035", 128, 50.8, "TF-Slim mobilenet/README.md (V2)"),
    ]
    monkeypatch.setattr(
        latency_module,
        "make_runner",
        lambda *args: pytest.fail("the CLI test runs from a filled cache"),
    )
    key = latency_module.cache_key("onnxruntime", 1, 1)
    cache = latency_module.LatencyCache(tmp_path / "cache", key)
    cache.put(
        [
            Measurement(p.model, p.resolution, p.top1, p.source, ms, 5)
            for p, ms in zip(cached, (1.5, 2.5), strict=True)
        ]
    )
    command = [
        "latency",
        "--models",
        "mobilenet_v2_035",
        "--resolutions",
        "96,128",
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main([*command, "--out", str(tmp_path / "out"), "--quiet", "--budget-ms", "2"]) == 0
    printed = capsys.readouterr().out
    assert (
        "within 2 ms: mobilenet_v2_035 at 96x96, 45.5% top-1 (TF-Slim mobilenet/README.md (V2)), 1.50 ms"
        in printed
    )
    assert (tmp_path / "out" / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mobilenet_v2_035 | 128 | 50.8 | 2.50 | yes |" in (tmp_path / "out" / "latency.md").read_text()
    assert main([*command, "--out", str(tmp_path / "out"), "--quiet", "--budget-ms", "1"]) == 1
    assert (
        "no variant fits 1 ms on onnxruntime, 1 thread, batch 1: the fastest, mobilenet_v2_035 at 96, takes 1.50 ms"
        in capsys.readouterr().out
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "latency.md").write_text("my notes")
    assert main([*command, "--out", str(tmp_path / "mine"), "--quiet"]) == 2
    assert "was not written by mobilenets latency" in capsys.readouterr().err
    assert (tmp_path / "mine" / "latency.md").read_text() == "my notes"
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "latency.png").write_bytes(b"my plot")
    assert main([*command, "--out", str(tmp_path / "plots"), "--quiet"]) == 2
    assert "latency.png exists and was not written by mobilenets latency" in capsys.readouterr().err
    assert (tmp_path / "plots" / "latency.png").read_bytes() == b"my plot"


@pytest.mark.parametrize(
    "damage",
    [
        b'{"key": ',  # truncated
        b"[1, 2]",
        b'{"key": KEY, "points": {"mobilenet_v2_035@96": 5}}',
        b'{"key": KEY, "points": {"mobilenet_v2_035@96": {"median_ms": "1.5", "rounds": 5}}}',
        b'{"key": KEY, "points": {"mobilenet_v2_035@96": {"median_ms": -1, "rounds": 5}}}',
        b'{"key": KEY, "points": []}',
    ],
)
def test_a_damaged_cache_is_measured_again_not_trusted(damage, tmp_path):
    key = latency_module.cache_key("onnxruntime", 1, 1)
    cache = latency_module.LatencyCache(tmp_path, key)
    good = Measurement("mobilenet_v2_035", 96, 45.5, "test", 1.5, 5)
    cache.put([good])
    assert (
        latency_module.LatencyCache(tmp_path, key).get(GridPoint("mobilenet_v2_035", 96, 45.5, "test"), 5)
        == good
    )
    cache.path.write_bytes(damage.replace(b"KEY", json.dumps(key).encode()))
    reread = latency_module.LatencyCache(tmp_path, key)
    assert reread.get(GridPoint("mobilenet_v2_035", 96, 45.5, "test")) is None


def test_what_a_backend_cannot_do_is_named(capsys):
    assert main(["latency", "--backend", "c", "--threads", "2"]) == 2
    assert "the generated C runs one image on one thread" in capsys.readouterr().err
    assert main(["latency", "--backend", "tflite"]) == 2
    assert (
        "unknown backend 'tflite'; choose from onnxruntime, openvino, torch, numpy, c"
        in capsys.readouterr().err
    )
