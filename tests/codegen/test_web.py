"""`mobilenets web`: the generated C as WebAssembly in a static page, tested in a real browser (headless
Chromium driven by Selenium): the page's top-5 for an image equals the native build's for the same image,
float and int8; a file that is not an image gets a message; labels from the model's file stay text."""

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest

from mobilenets.cli import main
from mobilenets.codegen import CodegenError, build, generate, write_site

from conftest import TOOL_PACKAGES, _require_tools
from small_runs import calibration_images, shapes_classifier_onnx, unsupported_op_onnx

WASM_TOOL_PACKAGES = {**TOOL_PACKAGES, "clang": "clang wasi-libc libclang-rt-dev-wasm32", "wasm-ld": "lld"}
BROWSER_TOOL_PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
TIMEOUT_S = 60


@pytest.fixture
def wasm_toolchain():
    _require_tools(WASM_TOOL_PACKAGES)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's chromium and chromium-driver; Selenium finds nothing by itself, so
    nothing is downloaded)."""
    _require_tools(BROWSER_TOOL_PACKAGES)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    arguments = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
    # Chromium's synthetic camera (a moving test pattern), granted without asking: the camera path runs.
    camera = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    for argument in arguments + camera:
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_script_timeout(TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture
def serve():
    """serve(folder) -> the URL of a static file server for that folder (python -m http.server's)."""
    servers = []

    def start(folder) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The float V3-Small 0.5 at 64 px with the demo's class names, and its int8 QDQ file."""
    from mobilenets.deploy.quantize import quantize

    folder = tmp_path_factory.mktemp("web")
    _, path = shapes_classifier_onnx(folder / "v3.onnx", resolution=64, seed=3)
    images = calibration_images(folder / "calibration", 24, 80)
    return {"float": path, "int8": quantize(path, folder / "v3.int8.onnx", images).path}


@pytest.fixture(scope="module")
def float_site(models, tmp_path_factory, wasm_toolchain_once):
    return write_site(models["float"], tmp_path_factory.mktemp("float-site") / "site")


@pytest.fixture(scope="module")
def wasm_toolchain_once():
    _require_tools(WASM_TOOL_PACKAGES)


def picture(path, width=150, height=97):
    """A test picture (not square, so resize and crop both work): a disc on colour gradients, as PNG and
    as the same pixels in a binary PPM for the native build."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    disc = (x - 0.6 * width) ** 2 + (y - 0.45 * height) ** 2 < (0.3 * height) ** 2
    rgb = np.stack([x * 255 // width, y * 255 // height, 255 * disc], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path.with_suffix(".png"))
    path.with_suffix(".ppm").write_bytes(f"P6\n{width} {height}\n255\n".encode() + rgb.tobytes())
    return path.with_suffix(".png"), path.with_suffix(".ppm")


def wait_for_state(driver, *states):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT_S).until(
        lambda d: d.execute_script("return document.body.dataset.state") in states
    )
    return driver.execute_script("return document.body.dataset.state")


def open_page(driver, url):
    driver.get(url)
    assert wait_for_state(driver, "ready", "error") == "ready", driver.find_element("id", "status").text


def page_top5(driver, image):
    driver.find_element("id", "file").send_keys(str(image))
    wait_for_state(driver, "done", "error")
    rows = driver.find_elements("css selector", "#top5 li")
    return [
        (row.find_element("class name", "label").text, row.find_element("class name", "score").text)
        for row in rows
    ]


def native_top5(folder, ppm):
    text = subprocess.run([str(build(folder)), str(ppm)], capture_output=True, text=True, check=True).stdout
    return [(m[2], m[1]) for m in re.finditer(r"^\s*([\d.]+%)\s+(.+)$", text, re.M)]


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_the_page_shows_the_native_builds_top5(
    kind, models, float_site, tmp_path, wasm_toolchain, browser, serve
):
    """Issue 20: the page's top-5 (from model.wasm in Chromium) equals ./model's (the same C built
    natively) for the same image: the same classes in the same order, scores within 0.01 points (wasm
    has no fused multiply-add, the native build contracts)."""
    site = float_site if kind == "float" else write_site(models[kind], tmp_path / "site")
    assert sorted(p.name for p in site.folder.iterdir()) == [
        "app.js",
        "index.html",
        "model.json",
        "model.wasm",
    ]
    assert site.int8 == (kind == "int8") and site.classes == 6
    png, ppm = picture(tmp_path / "picture")
    generate(models[kind], tmp_path / "c")
    native = native_top5(tmp_path / "c", ppm)
    assert len(native) == 5 and len({score for _, score in native}) > 1, (
        native
    )  # the scores depend on the image
    open_page(browser, serve(site.folder))
    shown = page_top5(browser, png)
    assert [label for label, _ in shown] == [label for label, _ in native], (shown, native)
    for (_, ours), (_, theirs) in zip(shown, native, strict=True):
        assert abs(float(ours.rstrip("%")) - float(theirs.rstrip("%"))) <= 0.0101, (shown, native)
    assert re.fullmatch(
        r"inference [\d.]+ ms, pre-processing [\d.]+ ms", browser.find_element("id", "timing").text
    )
    # Every logit, on a raw input: the int8 C is integer arithmetic, the same on both; float may differ
    # in the last bits (no FMA in wasm).
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    (tmp_path / "input.f32").write_bytes(x.tobytes())
    printed = subprocess.run(
        [str(tmp_path / "c" / "model"), "--raw", str(tmp_path / "input.f32"), "--logits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    native_logits = np.array(printed.split(), np.float32)
    page_logits = np.array(
        browser.execute_script("return window.mobilenets.runInput(arguments[0]).logits", x.ravel().tolist()),
        np.float32,
    )
    assert len(np.unique(native_logits)) >= 4 and native_logits.shape == page_logits.shape == (6,)
    if kind == "int8":
        np.testing.assert_array_equal(page_logits, native_logits)
    else:
        np.testing.assert_allclose(
            page_logits, native_logits, rtol=1e-4, atol=1e-4 * np.abs(native_logits).max()
        )
    imports = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('model.wasm').then(r => r.arrayBuffer()).then(b => done(WebAssembly.Module.imports(new WebAssembly.Module(b))));"
    )
    assert imports == []  # no runtime, no WASI calls: the module stands alone
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert {name.rsplit("/", 1)[1] for name in fetched} >= {"app.js", "model.json", "model.wasm"}
    assert all(name.startswith(browser.current_url) or name.startswith("blob:") for name in fetched), fetched


def test_the_page_classifies_the_cameras_frames(float_site, browser, serve):
    """Chromium's synthetic camera: frames are classified until the user stops the camera."""
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, serve(float_site.folder))
    browser.find_element("id", "camera-start").click()
    WebDriverWait(browser, TIMEOUT_S).until(lambda d: len(d.find_elements("css selector", "#top5 li")) == 5)
    assert browser.find_element("id", "status").text == "Classifying the camera's frames"
    assert browser.find_element("id", "camera").is_displayed()
    browser.find_element("id", "camera-stop").click()
    assert browser.find_element("id", "status").text == "Camera stopped"
    assert not browser.find_element("id", "camera").is_displayed()


def test_web_takes_a_run_folder(demo_onnx, tmp_path, capsys, wasm_toolchain, browser, serve):
    """`mobilenets web RUN`: the run's best checkpoint is exported, compiled and put in a page named after
    the run, with the run's class names."""
    assert main(["web", str(demo_onnx), "-o", str(tmp_path / "site")]) == 0
    assert "the page downloads" in capsys.readouterr().out
    info = json.loads((tmp_path / "site" / "model.json").read_text())
    assert info["name"] == demo_onnx.name and len(info["labels"]) == 6 and info["labels"] != list("012345")
    open_page(browser, serve(tmp_path / "site"))
    assert browser.title == demo_onnx.name
    png = sorted((demo_onnx / "demo-data" / "val").rglob("*.jpg"))[0]
    assert len(page_top5(browser, png)) == 5


def test_a_file_that_is_not_an_image_gets_a_message(float_site, tmp_path, browser, serve):
    png, _ = picture(tmp_path / "picture")
    open_page(browser, serve(float_site.folder))
    assert len(page_top5(browser, png)) == 5
    fake = tmp_path / "notes.png"
    fake.write_text("not pixels")
    assert page_top5(browser, fake) == []  # the last image's results are gone, not left standing
    status = browser.find_element("id", "status")
    assert status.text == "notes.png is not an image this browser can read (PNG, JPEG, GIF, WebP, BMP...)."
    assert "error" in status.get_attribute("class")
    assert not browser.find_element("id", "preview").is_displayed()  # nor the last image


def test_labels_from_the_file_are_shown_as_text(models, tmp_path, wasm_toolchain, browser, serve):
    """Class names come from a stranger's file: the page puts them in with textContent, never as markup."""
    onnx = pytest.importorskip("onnx")

    hostile = [
        "<img src=x onerror=\"document.title='owned'\">",
        "</script><script>document.title='owned'</script>",
        *"bcde",
    ]
    proto = onnx.load(str(models["float"]))
    for entry in proto.metadata_props:
        if entry.key == "class_names":
            entry.value = json.dumps(hostile)
    onnx.save(proto, str(tmp_path / "hostile.onnx"))
    site = write_site(tmp_path / "hostile.onnx", tmp_path / "site")
    png, _ = picture(tmp_path / "picture")
    open_page(browser, serve(site.folder))
    labels = [label for label, _ in page_top5(browser, png)]
    assert (
        set(labels) <= set(hostile) and len(labels) == 5 and set(hostile[:2]) & set(labels)
    )  # shown, as text
    assert browser.find_elements("css selector", "#top5 img, #top5 script") == []
    assert browser.title == "hostile"


def test_a_model_the_generator_cannot_compile_writes_no_page(tmp_path, capsys):
    """The reason comes before any file of the site: nothing is written."""
    pytest.importorskip("onnx")
    unsupported_op_onnx(tmp_path / "lrn.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07" + b"\xff" * 40)
    for name, reason in (
        ("lrn.onnx", "node 'norm1' (LRN): op LRN is not supported by the C generator"),
        ("junk.onnx", "not an ONNX model (varint too long)"),
    ):
        assert main(["web", str(tmp_path / name), "-o", str(tmp_path / "site")]) == 2
        error = capsys.readouterr().err
        assert f"{name}: " in error and reason in error
        assert not (tmp_path / "site").exists()


def test_missing_wasm_tools_are_named_before_writing(models, tmp_path, monkeypatch):
    monkeypatch.setenv("WASM_CC", "no-such-clang")
    with pytest.raises(
        CodegenError,
        match="no-such-clang not found: WebAssembly needs apt-get install -y clang lld wasi-libc",
    ):
        write_site(models["float"], tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_a_folder_with_a_users_files_is_refused(models, float_site, tmp_path, wasm_toolchain):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("my own page")
    with pytest.raises(CodegenError, match="was not written by mobilenets web"):
        write_site(models["float"], site)
    assert (site / "index.html").read_text() == "my own page"
    write_site(models["int8"], shutil.copytree(float_site.folder, tmp_path / "ours"))  # ours: replaced
    assert '"int8": true' in (tmp_path / "ours" / "model.json").read_text()


def test_make_wasm_is_in_every_generated_makefile(models, tmp_path, wasm_toolchain):
    """compile-c's folder builds model.wasm by itself, float and int8, warning-free."""
    for kind, path in models.items():
        folder = tmp_path / kind
        generate(path, folder)
        result = subprocess.run(
            ["make", "wasm", "WASM_CFLAGS=--target=wasm32-wasi -O2 -msimd128 -std=c99 -Wall -Wextra -Werror"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert (folder / "model.wasm").read_bytes()[:4] == b"\0asm"
