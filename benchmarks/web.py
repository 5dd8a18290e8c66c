"""The page `mobilenets web` writes against onnxruntime-web, side by side in one headless Chromium.

For V3-Small and V2 at 224 (float32, and the int8 QDQ files of `mobilenets quantize`): our page (the
generated C as model.wasm, SIMD128) and a page running the same ONNX file with onnxruntime-web's WASM
backend (SIMD, one thread: a page from a plain static server is not cross-origin isolated, so it gets
no threads either). Both pages are open at once and timed in alternating rounds (the host's speed flips
every 30-60 s); each round's figure is the median of its runs, timed in the page with performance.now().
Bytes are what each page downloaded (Resource Timing: the HTML, scripts, WebAssembly and model), split
into the model's weights and the rest (the runtime).

Needs Debian's chromium and chromium-driver, Selenium, and npm (onnxruntime-web is installed into
benchmarks/.cache/ on first use). Writes benchmarks/results/web.md.

    python benchmarks/web.py [--rounds 9] [--runs 10]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from mobilenets import create_model
from mobilenets.codegen import generate, write_site
from mobilenets.deploy.export import export_onnx

from common import machine, write_results

ORT_WEB_VERSION = "1.31.1"
CACHE = Path(__file__).parent / ".cache"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
NAMES = ("mobilenet_v3_small_100", "mobilenet_v2_100")

ORT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>onnxruntime-web</title></head>
<body data-state="loading">
<script src="ort.wasm.min.js"></script>
<script>
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = "./";
let session;
ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"], graphOptimizationLevel: "all" })
  .then((s) => { session = s; document.body.dataset.state = "ready"; })
  .catch((e) => { document.body.dataset.state = "error: " + e.message; });
// runs on the given NCHW input: per-run milliseconds, and the logits of the last run
async function timeRuns(values, shape, runs) {
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", Float32Array.from(values), shape) };
  const times = [];
  let out;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    out = await session.run(feeds);
    times.push(performance.now() - t0);
  }
  return { times, logits: Array.from(out[session.outputNames[0]].data) };
}
</script></body></html>
"""

# Our page's classifier (app.js's window.mobilenets), timed the same way.
OURS_TIME = """
const [values, runs] = arguments;
const times = [];
let result;
for (let i = 0; i < runs; i++) { result = window.mobilenets.runInput(values); times.push(result.runMs); }
return { times, logits: result.logits };
"""
THEIRS_TIME = """
const [values, shape, runs, done] = arguments;
timeRuns(values, shape, runs).then(done, (e) => done({ error: e.message }));
"""
DOWNLOADED = """
const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
return entries.map((e) => [e.name.split("/").pop() || "index.html", e.encodedBodySize]);
"""


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, *args):
        pass


def serve(folder: Path) -> str:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def onnxruntime_web() -> Path:
    """The npm package's dist/ folder, installed into benchmarks/.cache/ once."""
    dist = CACHE / "node_modules" / "onnxruntime-web" / "dist"
    if not (dist / ORT_FILES[-1]).is_file():
        if not shutil.which("npm"):
            raise SystemExit("npm not found: apt-get install -y npm (onnxruntime-web is an npm package)")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(CACHE),
                "--no-audit",
                "--no-fund",
                f"onnxruntime-web@{ORT_WEB_VERSION}",
            ],
            check=True,
        )
    return dist


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y {package}")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_script_timeout(600)
    return driver


def wait_ready(driver) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 300).until(
        lambda d: d.execute_script("return document.body.dataset.state") != "loading"
    )
    state = driver.execute_script("return document.body.dataset.state")
    if state != "ready":
        raise SystemExit(f"{driver.current_url}: {state}")


def models(work: Path) -> list[tuple[str, Path, int]]:
    """(label, ONNX file, weight bytes) for each variant, float and int8."""
    from mobilenets.deploy.quantize import quantize

    images = work / "calibration"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(16):  # upsampled low-resolution colour noise: structured enough to calibrate on
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(low).resize((256, 256), Image.BILINEAR).save(images / f"{i}.png")
    found = []
    for name in NAMES:
        path = export_onnx(create_model(name), work / f"{name}.onnx").path
        int8 = quantize(path, work / f"{name}.int8.onnx", images).path
        for label, file in ((f"{name} float32", path), (f"{name} int8", int8)):
            weights = generate(file, work / f"{file.stem}_c").weight_bytes
            found.append((label, file, weights))
    return found


def measure(
    driver, label: str, onnx: Path, weights: int, work: Path, dist: Path, rounds: int, runs: int
) -> dict:
    ours = write_site(onnx, work / f"{onnx.stem}_site")
    theirs = work / f"{onnx.stem}_ort"
    theirs.mkdir()
    for name in ORT_FILES:
        shutil.copy(dist / name, theirs / name)
    shutil.copy(onnx, theirs / "model.onnx")
    (theirs / "index.html").write_text(ORT_PAGE)
    home = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(serve(ours.folder))
    wait_ready(driver)
    ours_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(serve(theirs))
    wait_ready(driver)
    theirs_tab = driver.current_window_handle
    shape = [1, *json.loads((ours.folder / "model.json").read_text())["input"]]
    values = np.random.default_rng(1).standard_normal(int(np.prod(shape))).astype(np.float32).tolist()

    def time_ours():
        driver.switch_to.window(ours_tab)
        return driver.execute_script(OURS_TIME, values, runs)

    def time_theirs():
        driver.switch_to.window(theirs_tab)
        result = driver.execute_async_script(THEIRS_TIME, values, shape, runs)
        if "error" in result:
            raise SystemExit(f"onnxruntime-web: {result['error']}")
        return result

    time_ours(), time_theirs()  # warm-up: compilation tiers, first allocations
    medians = {"ours": [], "theirs": []}
    for r in range(rounds):
        order = (("ours", time_ours), ("theirs", time_theirs))
        for side, run in order if r % 2 == 0 else reversed(order):
            result = run()
            medians[side].append(statistics.median(result["times"]))
            medians[f"{side} logits"] = result["logits"]
    a, b = np.array(medians["ours logits"]), np.array(medians["theirs logits"])
    downloaded = {}
    for side, tab in (("ours", ours_tab), ("theirs", theirs_tab)):
        driver.switch_to.window(tab)
        downloaded[side] = dict(driver.execute_script(DOWNLOADED))
        driver.close()
    driver.switch_to.window(home)
    model_bytes = {"ours": weights, "theirs": onnx.stat().st_size}
    ratios = [x / y for x, y in zip(medians["ours"], medians["theirs"], strict=True)]
    return {
        "label": label,
        "ours_ms": statistics.median(medians["ours"]),
        "theirs_ms": statistics.median(medians["theirs"]),
        "ratio": statistics.median(ratios),
        "spread": "{:.2f}-{:.2f}".format(*statistics.quantiles(ratios, n=4)[::2]),
        "top1": int(a.argmax() == b.argmax()),
        "max_diff": float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)),
        "bytes": {side: sum(files.values()) for side, files in downloaded.items()},
        "model_bytes": model_bytes,
        "files": downloaded,
    }


def table(results: list[dict]) -> str:
    rows = [
        "| model | ours (ms) | onnxruntime-web (ms) | ratio | quartiles | latency (<= 1.0) |"
        " ours downloads | theirs | ratio | runtime only: ours | theirs | ratio (<= 0.1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mib = 1024 * 1024
    for r in results:
        ours, theirs = r["bytes"]["ours"], r["bytes"]["theirs"]
        run_ours = ours - r["model_bytes"]["ours"]
        run_theirs = theirs - r["model_bytes"]["theirs"]
        rows.append(
            f"| {r['label']} | {r['ours_ms']:.1f} | {r['theirs_ms']:.1f} | {r['ratio']:.2f} | {r['spread']} | "
            f"{'meets' if r['ratio'] <= 1.0 else 'misses'} | {ours / mib:.2f} MiB | {theirs / mib:.2f} MiB | "
            f"{ours / theirs:.2f} | {run_ours / 1024:.0f} KiB | {run_theirs / 1024:.0f} KiB | "
            f"{run_ours / run_theirs:.3f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--runs", type=int, default=10, help="runs per round; the round's figure is their median"
    )
    args = parser.parse_args()
    dist = onnxruntime_web()
    work = Path(tempfile.mkdtemp(prefix="mobilenets-web-bench-"))
    driver = chromium()
    try:
        driver.get("about:blank")
        info = machine() | {
            "browser": f"Chromium {driver.capabilities.get('browserVersion')} (headless)",
            "onnxruntime-web": f"{ORT_WEB_VERSION} (WASM backend, SIMD, 1 thread)",
            "clang": subprocess.run(
                ["clang", "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
        }
        results = []
        for label, onnx, weights in models(work):
            result = measure(driver, label, onnx, weights, work, dist, args.rounds, args.runs)
            print(json.dumps({k: v for k, v in result.items() if k != "files"}), flush=True)
            results.append(result)
    finally:
        driver.quit()
        shutil.rmtree(work, ignore_errors=True)
    files = "\n".join(
        f"- {r['label']}: ours {r['files']['ours']}; onnxruntime-web {r['files']['theirs']}" for r in results
    )
    agreement = "\n".join(
        f"- {r['label']}: same top-1 {bool(r['top1'])}, largest logit difference {r['max_diff']:.1e} of the largest"
        for r in results
    )
    body = f"""Latency: median over rounds of each round's median of {args.runs} runs (timed in the page with
performance.now()); ratio = ours / onnxruntime-web per round, median and quartiles over {args.rounds}
alternating rounds. Downloads: every byte each page fetched (Resource Timing's encodedBodySize; no
compression, as python -m http.server serves). "Runtime only" leaves out the model's weights (ours:
the weight arrays inside model.wasm; theirs: the .onnx file): the inference engine each page brings.

{table(results)}

Both pages computed the same logits (random-init weights, a normal-noise input):

{agreement}

Files downloaded (bytes):

{files}
"""
    print(write_results("web", "The web page (model.wasm) against onnxruntime-web in Chromium", body, info))


if __name__ == "__main__":
    main()
