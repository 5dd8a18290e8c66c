// Written by mobilenets web. Classifies an image the user picks, or the camera's frames, with model.wasm:
// the model's generated C (compile-c) built for WebAssembly, pre-processing included, so the page gives the
// model the same input as the native ./model. Nothing is fetched but model.json and model.wasm, from here.
"use strict";

const MAX_PIXELS = 16_000_000; // larger images are scaled down first (web.c refuses over 64 M pixels)
const TOP_K = 5;
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModel() {
  const info = await (await fetch("model.json")).json();
  const response = await fetch("model.wasm");
  if (!response.ok) throw new Error(`model.wasm: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer(); // any static server: no need for application/wasm
  const { instance } = await WebAssembly.instantiate(bytes, {});
  return { info, wasm: instance.exports };
}

// Softmax in double precision and the top k, NaN last: as main.c prints them.
function topK(logits, labels, k) {
  let top = -Infinity;
  for (const v of logits) if (v > top) top = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - top);
  const order = Array.from(logits.keys()).sort((a, b) => {
    const x = logits[a], y = logits[b];
    if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y) || a - b;
    return y - x || a - b;
  });
  return order.slice(0, k).map((i) => ({
    index: i,
    label: labels[i] ?? String(i),
    probability: Math.exp(logits[i] - top) / sum,
  }));
}

function makeClassifier({ info, wasm }) {
  const classes = wasm.web_classes();
  const logitsView = () => new Float32Array(wasm.memory.buffer, wasm.web_logits(), classes);

  // RGBA pixels (as a canvas's ImageData) -> top-k and the time of each part, in milliseconds.
  function classifyPixels(rgba, width, height) {
    const pointer = wasm.web_image(width, height);
    if (!pointer) throw new Error(`a ${width}x${height} image does not fit (at most 64 M pixels)`);
    new Uint8Array(wasm.memory.buffer, pointer, width * height * 4).set(rgba); // after web_image: memory may grow
    const t0 = performance.now();
    wasm.web_preprocess(width, height);
    const t1 = performance.now();
    wasm.web_run();
    const t2 = performance.now();
    return { top: topK(logitsView(), info.labels, TOP_K), preprocessMs: t1 - t0, runMs: t2 - t1 };
  }

  // A normalised NCHW float input (benchmarks) -> the logits and the time of model_run.
  function runInput(values) {
    new Float32Array(wasm.memory.buffer, wasm.web_input(), wasm.web_input_size()).set(values);
    const t0 = performance.now();
    wasm.web_run();
    return { logits: Array.from(logitsView()), runMs: performance.now() - t0 };
  }
  return { classifyPixels, runInput, info };
}

const canvas = document.createElement("canvas"); // one for every image and frame
const context = canvas.getContext("2d", { willReadFrequently: true });

function pixelsOf(source, width, height) {
  const scale = Math.min(1, Math.sqrt(MAX_PIXELS / (width * height)));
  const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
  canvas.width = w; // also clears it
  canvas.height = h;
  context.drawImage(source, 0, 0, w, h);
  return { rgba: context.getImageData(0, 0, w, h).data, width: w, height: h };
}

function show(result) {
  const list = $("top5");
  list.replaceChildren(
    ...result.top.map(({ label, probability }) => {
      const item = document.createElement("li");
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `${(100 * probability).toFixed(2)}%`;
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label; // textContent: a label from the model's file is text, never markup
      item.append(score, name);
      return item;
    }),
  );
  $("timing").textContent =
    `inference ${result.runMs.toFixed(1)} ms, pre-processing ${result.preprocessMs.toFixed(1)} ms`;
}

async function classifyFile(classifier, file) {
  let bitmap;
  try {
    // The file's own pixels: no colour management, no premultiplied alpha (as ./model reads a PPM).
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    $("preview").hidden = true;
    $("top5").replaceChildren();
    $("timing").textContent = "";
    setStatus(`${file.name} is not an image this browser can read (PNG, JPEG, GIF, WebP, BMP...).`, true);
    document.body.dataset.state = "error";
    return;
  }
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  const { rgba, width, height } = pixelsOf(bitmap, bitmap.width, bitmap.height);
  bitmap.close();
  show(classifier.classifyPixels(rgba, width, height));
  setStatus(`${file.name} (${width}x${height})`);
  document.body.dataset.state = "done";
}

function cameraControls(classifier) {
  const video = $("camera");
  let stream = null;
  async function frame() {
    if (!stream) return;
    if (video.readyState >= 2) {
      const { rgba, width, height } = pixelsOf(video, video.videoWidth, video.videoHeight);
      show(classifier.classifyPixels(rgba, width, height));
    }
    requestAnimationFrame(frame);
  }
  $("camera-start").addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (error) {
      setStatus(`No camera: ${error.message} (the page must come from https:// or localhost).`, true);
      return;
    }
    video.srcObject = stream;
    await video.play();
    video.hidden = false;
    $("preview").hidden = true;
    $("camera-start").hidden = true;
    $("camera-stop").hidden = false;
    setStatus("Classifying the camera's frames");
    requestAnimationFrame(frame);
  });
  $("camera-stop").addEventListener("click", () => {
    stream?.getTracks().forEach((track) => track.stop());
    stream = null;
    video.hidden = true;
    $("camera-start").hidden = false;
    $("camera-stop").hidden = true;
    setStatus("Camera stopped");
  });
}

async function main() {
  try {
    const classifier = makeClassifier(await loadModel());
    const { info } = classifier;
    const [c, h, w] = info.input;
    document.title = $("title").textContent = info.name;
    $("model").textContent =
      `${info.classes} classes, ${w}x${h}x${c} input, ${info.int8 ? "int8" : "float32"}, ` +
      `model.wasm ${(info.wasm_bytes / 1024).toFixed(0)} KiB`;
    $("file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) classifyFile(classifier, file);
    });
    cameraControls(classifier);
    window.mobilenets = classifier; // for scripts and tests: classifyPixels, runInput, info
    setStatus("Pick an image, or use the camera.");
    document.body.dataset.state = "ready";
  } catch (error) {
    setStatus(`Could not load the model: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

main();
