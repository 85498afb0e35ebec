// The playground: draw or drop a digit (mnist + deskew) or a number (ocr), compare versions or
// labels on the same input, or call any other model through a form built from its signature.
//
// Every picture goes to the task endpoints with `include_input=true`, which return the picture
// exactly as the model received it (`model_input`); comparisons send that same input to
// `/v2/models/{name}/versions/{v}/infer` or `/v1/models/{name}/labels/{label}:predict`.

import { api, postPicture } from "./api.js";
import { barChart, heatStrip } from "./charts.js";
import { catalog } from "./catalog.js";
import { badge, clear, errorBox, h, percent } from "./dom.js";
import { DrawingPad } from "./draw.js";
import { genericView } from "./generic.js";

const DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const OCR_CLASSES = [...DIGITS, "blank"];
const MODES = [
  { id: "digit", title: "One digit", hint: "mnist reads it, deskew measures its tilt" },
  { id: "number", title: "A number", hint: "ocr reads a line of digits" },
  { id: "other", title: "Any model", hint: "a form built from the signature" },
];

// ---- targets: which version or label answers -------------------------------------------

function targetOptions(model, { allowNone }) {
  const options = [];
  if (allowNone) options.push({ value: "none", text: "nothing" });
  if (model && model.latest) {
    options.push({ value: "default", text: `newest (version ${model.latest.version})` });
  }
  for (const entry of model ? model.ready : []) {
    options.push({ value: `version:${entry.version}`, text: `version ${entry.version}` });
  }
  for (const [label, version] of Object.entries(model ? model.labels : {}).sort()) {
    options.push({ value: `label:${label}`, text: `label “${label}” (version ${version})` });
  }
  return options;
}

function parseTarget(value, model) {
  if (!value || value === "none") return null;
  if (value === "default") return { kind: "default", version: model.latest?.version };
  const [kind, rest] = value.split(/:(.*)/s);
  if (kind === "version") return { kind, version: Number(rest) };
  return { kind: "label", label: rest, version: model.labels[rest] };
}

function targetTitle(target) {
  if (target.kind === "label") return `label “${target.label}” · version ${target.version}`;
  if (target.kind === "default") return `newest · version ${target.version}`;
  return `version ${target.version}`;
}

function targetSelect(model, { allowNone, value, onChange, testid }) {
  const select = h("select", { dataset: { testid }, onchange: () => onChange(select.value) });
  for (const option of targetOptions(model, { allowNone })) {
    select.append(h("option", { value: option.value }, option.text));
  }
  select.value = value;
  if (select.value !== value) select.value = allowNone ? "none" : "default";
  return select;
}

// The same model input through another version (v2) or a label (TF Serving REST).
async function inferOn(modelName, target, rows) {
  const height = rows.length;
  const width = rows[0].length;
  if (target.kind === "label") {
    const instance = rows.map((row) => row.map((value) => [value]));
    const path = `/v1/models/${encodeURIComponent(modelName)}/labels/` +
      `${encodeURIComponent(target.label)}:predict`;
    const body = await api(path, { method: "POST", json: { instances: [instance] } });
    const row = body.predictions[0];
    return { ...row, version: target.version };
  }
  const path = `/v2/models/${encodeURIComponent(modelName)}/versions/${target.version}/infer`;
  const body = await api(path, { method: "POST", json: { inputs: [{
    name: "image", datatype: "FP32", shape: [1, height, width, 1], data: rows.flat() }] } });
  const outputs = {};
  for (const output of body.outputs) {
    const inner = output.shape.slice(1);
    if (inner.length === 0) outputs[output.name] = output.data[0];
    else if (inner.length === 1) outputs[output.name] = output.data.slice(0, inner[0]);
    else {
      const [steps, classes] = inner;
      outputs[output.name] = Array.from({ length: steps }, (_, t) =>
        output.data.slice(t * classes, (t + 1) * classes));
    }
  }
  return { ...outputs, version: Number(body.model_version) };
}

// ---- pictures of model inputs -----------------------------------------------------------

// `[H][W]` values in [0, 1] as a canvas of H x W pixels: white ink on black, as MNIST.
export function inputCanvas(rows, cls = "model-input") {
  const height = rows.length;
  const width = rows[0].length;
  const canvas = h("canvas", { class: cls });
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  rows.forEach((row, y) => row.forEach((value, x) => {
    const level = Math.round(Math.max(0, Math.min(1, value)) * 255);
    const at = (y * width + x) * 4;
    image.data[at] = level;
    image.data[at + 1] = level;
    image.data[at + 2] = level;
    image.data[at + 3] = 255;
  }));
  context.putImageData(image, 0, 0);
  return canvas;
}

function deskewFigure(rows, angle, scale) {
  const source = inputCanvas(rows);
  const size = 168;
  const factor = size / 28;
  const turned = h("canvas", { class: "deskew-view", "aria-label": "estimated pose" });
  const straight = h("canvas", { class: "deskew-view", "aria-label": "straightened digit" });
  for (const canvas of [turned, straight]) {
    canvas.width = size * 2;
    canvas.height = size * 2;
  }
  const radians = (angle * Math.PI) / 180;
  let context = turned.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(source, 0, 0, size * 2, size * 2);
  context.translate(size, size);
  context.rotate(-radians); // counter-clockwise as displayed
  const side = 20 * scale * factor * 2;
  context.strokeStyle = "#fbbf24";
  context.lineWidth = 4;
  context.setLineDash([14, 8]);
  context.strokeRect(-side / 2, -side / 2, side, side);
  context.setLineDash([]);
  context.beginPath(); // the box's "up": where the digit's top is
  context.moveTo(0, -side / 2);
  context.lineTo(0, -side / 2 - 22);
  context.stroke();
  context.beginPath();
  context.moveTo(-10, -side / 2 - 12);
  context.lineTo(0, -side / 2 - 24);
  context.lineTo(10, -side / 2 - 12);
  context.stroke();

  context = straight.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, size * 2, size * 2);
  context.imageSmoothingEnabled = true;
  context.translate(size, size);
  context.rotate(radians); // turned back: clockwise by the estimate
  context.scale(1 / scale, 1 / scale);
  context.drawImage(source, -size, -size, size * 2, size * 2);
  return { turned, straight };
}

// ---- the digit mode ---------------------------------------------------------------------

function liveRunner(task) {
  let running = false;
  let queued = null;
  return (argument) => {
    queued = { argument };
    if (running) return;
    running = true;
    (async () => {
      while (queued) {
        const next = queued;
        queued = null;
        try {
          await task(next.argument);
        } catch (error) {
          console.warn(error);
        }
      }
      running = false;
    })();
  };
}

function throttle(fn, ms) {
  let last = 0;
  let timer = 0;
  return (arg) => {
    const wait = last + ms - performance.now();
    clearTimeout(timer);
    if (wait <= 0) {
      last = performance.now();
      fn(arg);
    } else {
      timer = setTimeout(() => {
        last = performance.now();
        fn(arg);
      }, wait);
    }
  };
}

function compareBar(model, state, rerun) {
  return h("div", { class: "compare" },
    h("label", {}, h("span", {}, "Answer with"),
      targetSelect(model, { allowNone: false, value: state.a, testid: "target-a",
                            onChange: (value) => { state.a = value; rerun(); } })),
    h("label", {}, h("span", {}, "compare with"),
      targetSelect(model, { allowNone: true, value: state.b, testid: "target-b",
                            onChange: (value) => { state.b = value; rerun(); } })));
}

function digitResult(target, answer, side, alone) {
  const probabilities = answer.probabilities;
  const best = probabilities.indexOf(Math.max(...probabilities));
  return h("div", { class: `answer side-${side}`, dataset: { testid: `answer-${side}` } },
    h("div", { class: "answer-head" },
      h("div", { class: "big-digit", dataset: { testid: `digit-${side}` } }, DIGITS[best]),
      h("div", {},
        h("div", { class: "answer-title" }, targetTitle(target)),
        h("div", { class: "muted" }, `${percent(probabilities[best])} sure`))),
    barChart(probabilities, DIGITS, { highlight: best, series: side === "a" ? 0 : 1,
                                      title: "probability of each digit",
                                      width: alone ? 600 : 320 }));
}

function digitView(root, models) {
  const mnist = models.get("mnist");
  const state = { a: "default", b: "none", picture: null, seq: 0 };
  const results = h("div", { class: "answers", dataset: { testid: "mnist-answers" } },
    h("p", { class: "empty-state" }, "Draw a digit in the box, or drop a picture of one."));
  const seen = h("div", { class: "seen" }, h("p", { class: "empty-state small" }, "—"));
  const deskew = h("div", { class: "deskew" }, h("p", { class: "empty-state small" }, "—"));
  const timing = h("div", { class: "timing muted small", "aria-live": "polite" });
  const pad = new DrawingPad({
    width: 280, height: 280, ink: 17, label: "Draw one digit here, or drop a picture",
    onChange: (change) => (change ? schedule(change) : reset()),
  });
  const headerCompare = h("div", {});

  function reset() {
    state.picture = null;
    state.seq += 1;
    results.dataset.state = "empty";
    clear(results, h("p", { class: "empty-state" }, "Draw a digit in the box, or drop a picture."));
    clear(seen, h("p", { class: "empty-state small" }, "—"));
    clear(deskew, h("p", { class: "empty-state small" }, "—"));
    timing.textContent = "";
  }

  const run = liveRunner(async () => {
    const seq = ++state.seq;
    const inputVersion = pad.version;
    const targets = `${state.a}|${state.b}`;
    results.dataset.state = "busy";
    const picture = await pad.picture();
    if (!picture) return;
    state.picture = picture;
    const started = performance.now();
    const targetA = parseTarget(state.a, mnist);
    const targetB = parseTarget(state.b, mnist);
    let classify;
    let skew;
    try {
      [classify, skew] = await Promise.all([
        postPicture("/tasks/classify-digit?top_k=10&include_input=true", picture),
        postPicture("/tasks/estimate-skew?include_input=true", picture).catch((error) => ({ error })),
      ]);
    } catch (error) {
      if (seq !== state.seq) return;
      clear(results, errorBox(error, "Reading the picture"));
      results.dataset.state = "error";
      results.dataset.input = String(inputVersion);
      return;
    }
    const byDigit = new Array(10).fill(0);
    for (const entry of classify.probabilities) byDigit[entry.digit] = entry.probability;
    const rows = classify.model_input;
    const answers = await Promise.all([targetA, targetB].map(async (target) => {
      if (!target) return null;
      if (target.kind === "default") {
        return { target: { ...target, version: classify.model_version },
                 answer: { probabilities: byDigit } };
      }
      try {
        return { target, answer: await inferOn("mnist", target, rows) };
      } catch (error) {
        return { target, error };
      }
    }));
    if (seq !== state.seq) return;
    const shown = answers.filter(Boolean);
    const columns = shown.map((entry, index) => {
      const side = index === 0 ? "a" : "b";
      if (entry.error) {
        return h("div", { class: `answer side-${side}` },
          h("div", { class: "answer-title" }, targetTitle(entry.target)),
          errorBox(entry.error, "Inference"));
      }
      return digitResult(entry.target, entry.answer, side, shown.length === 1);
    });
    clear(results, columns);
    results.classList.toggle("two", columns.length === 2);
    clear(seen, inputCanvas(rows, "model-input big"),
      h("p", { class: "caption" }, `28 × 28, exactly what mnist version ${classify.model_version} `
        + "was given: cropped to the ink, fitted into 20 × 20, centred by mass."));
    if (skew.error) clear(deskew, errorBox(skew.error, "deskew"));
    else {
      const figure = deskewFigure(skew.model_input, skew.angle_degrees, skew.scale);
      const turn = skew.angle_degrees;
      clear(deskew,
        h("div", { class: "deskew-pair" },
          h("figure", {}, figure.turned, h("figcaption", {}, "as seen, with the estimated pose")),
          h("figure", {}, figure.straight, h("figcaption", {}, "turned back and resized"))),
        h("p", { class: "deskew-numbers", dataset: { testid: "deskew-numbers" } },
          h("strong", {}, `${Math.abs(turn).toFixed(1)}° ${turn >= 0 ? "counter-clockwise" : "clockwise"}`),
          ` · ${skew.scale.toFixed(2)}× an MNIST digit · deskew version ${skew.model_version}`));
    }
    const elapsed = performance.now() - started;
    timing.textContent = `${picture.size.toLocaleString()} bytes sent · answered in ${elapsed.toFixed(0)} ms`;
    results.dataset.state = "done";
    results.dataset.input = String(inputVersion);
    results.dataset.targets = targets;
  });
  const schedule = throttle(() => run(), 220);
  const rerun = () => { if (state.picture || pad.dirty || pad.dropped) run(); };
  headerCompare.append(compareBar(mnist, state, rerun));

  const chooser = h("button", { type: "button", class: "ghost",
                                onclick: () => pad.fileInput.click() }, "Choose a picture…");
  root.append(
    h("section", { class: "grid playground-digit" },
      h("div", { class: "card pad-card" },
        h("div", { class: "card-head" }, h("h2", {}, "Your digit"),
          h("span", { class: "muted small" }, "mouse, pen or finger")),
        pad.element, pad.fileInput,
        h("div", { class: "row" },
          h("button", { type: "button", class: "ghost", onclick: () => pad.clear() }, "Clear"),
          chooser),
        timing,
        h("details", { class: "how" }, h("summary", {}, "How this page asks"),
          h("ol", { class: "small" },
            h("li", {}, "Each stroke sends the drawing as a PNG to ",
              h("code", {}, "POST /tasks/classify-digit?include_input=true"), " and ",
              h("code", {}, "/tasks/estimate-skew"), "."),
            h("li", {}, "The service converts it for the model and returns that input with "
              + "the answer: it is the picture under “What the model saw”."),
            h("li", {}, "Comparisons send the same input to ",
              h("code", {}, "/v2/models/mnist/versions/N/infer"), " or ",
              h("code", {}, "/v1/models/mnist/labels/L:predict"), ".")))),
      h("div", { class: "card result-card" },
        h("div", { class: "card-head" }, h("h2", {}, "mnist says"), headerCompare),
        results),
      h("div", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "What the model saw")), seen),
      h("div", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "deskew: tilt and size")), deskew)));
  if (!mnist || !mnist.latest) {
    results.replaceChildren(errorBox(new Error("the service has no ready version of mnist"),
                                     "Loading mnist"));
  }
}

// ---- the number mode --------------------------------------------------------------------

function stripFigure(rows, steps, strideColumns) {
  const width = rows[0].length;
  const image = inputCanvas(rows, "strip-input");
  const marks = h("div", { class: "strip-marks" });
  let previous = -1;
  steps.forEach((probabilities, t) => {
    const best = probabilities.indexOf(Math.max(...probabilities));
    if (best !== OCR_CLASSES.length - 1 && best !== previous) {
      const mark = h("span", { class: "strip-mark" }, OCR_CLASSES[best]);
      mark.style.left = `${(((t + 0.5) * strideColumns) / width) * 100}%`;
      marks.append(mark);
    }
    previous = best;
  });
  const covered = steps.length * strideColumns; // the last step may reach past the picture
  const heat = heatStrip(steps, OCR_CLASSES, { width: covered, stepWidth: strideColumns });
  image.style.width = `${(width / covered) * 100}%`;
  const strip = h("div", { class: "strip" }, marks, image, heat);
  // At most 6 screen pixels per input pixel: a short number stays a readable size.
  strip.style.width = `min(100%, ${covered * 6}px)`;
  const rowNames = h("div", { class: "heat-rows", "aria-hidden": "true" },
    OCR_CLASSES.map((name) => h("span", {}, name === "blank" ? "–" : name)));
  return h("div", { class: "strip-box" }, h("div", { class: "strip-line" }, rowNames, strip),
    h("div", { class: "strip-legend muted small" },
      `${width} × 28 pixels as the model received them; below, the probability of 0-9 and of `
      + `the blank (last row) at each of the ${steps.length} time steps (one per 4 columns)`));
}

function numberResult(target, answer, side) {
  const text = answer.text;
  return h("div", { class: `answer wide side-${side}`, dataset: { testid: `answer-${side}` } },
    h("div", { class: "answer-head" },
      h("div", { class: "reading", dataset: { testid: `reading-${side}` } }, text || "∅"),
      h("div", {},
        h("div", { class: "answer-title" }, targetTitle(target)),
        h("div", { class: "muted" }, `confidence ${percent(answer.confidence)}`))),
    stripFigure(answer.rows, answer.steps, 4));
}

function numberView(root, models) {
  const ocr = models.get("ocr");
  const state = { a: "default", b: "none", seq: 0 };
  const results = h("div", { class: "answers stacked", dataset: { testid: "ocr-answers" } },
    h("p", { class: "empty-state" }, "Write a number on the line, or drop a picture of one."));
  const timing = h("div", { class: "timing muted small", "aria-live": "polite" });
  const pad = new DrawingPad({
    width: 640, height: 200, ink: 11, label: "Write a number here, or drop a picture",
    onChange: (change) => (change ? schedule() : reset()),
  });
  function reset() {
    state.seq += 1;
    results.dataset.state = "empty";
    clear(results, h("p", { class: "empty-state" }, "Write a number on the line."));
    timing.textContent = "";
  }
  const run = liveRunner(async () => {
    const seq = ++state.seq;
    const inputVersion = pad.version;
    const targets = `${state.a}|${state.b}`;
    results.dataset.state = "busy";
    const picture = await pad.picture();
    const started = performance.now();
    let read;
    try {
      read = await postPicture("/tasks/read-digits?include_input=true&include_steps=true", picture);
    } catch (error) {
      if (seq !== state.seq) return;
      clear(results, errorBox(error, "Reading the picture"));
      results.dataset.state = "error";
      results.dataset.input = String(inputVersion);
      return;
    }
    const rows = read.model_input;
    const answers = await Promise.all([parseTarget(state.a, ocr), parseTarget(state.b, ocr)]
      .map(async (target) => {
        if (!target) return null;
        if (target.kind === "default") {
          return { target: { ...target, version: read.model_version },
                   answer: { text: read.text, confidence: read.confidence, rows,
                             steps: read.step_probabilities } };
        }
        try {
          const out = await inferOn("ocr", target, rows);
          return { target, answer: { text: out.text, confidence: out.confidence, rows,
                                     steps: out.probabilities } };
        } catch (error) {
          return { target, error };
        }
      }));
    if (seq !== state.seq) return;
    clear(results, answers.filter(Boolean).map((entry, index) => {
      const side = index === 0 ? "a" : "b";
      return entry.error
        ? h("div", { class: "answer wide" }, h("div", { class: "answer-title" },
          targetTitle(entry.target)), errorBox(entry.error, "Inference"))
        : numberResult(entry.target, entry.answer, side);
    }));
    timing.textContent = `${rows[0].length} × 28 strip · answered in ` +
      `${(performance.now() - started).toFixed(0)} ms`;
    results.dataset.state = "done";
    results.dataset.input = String(inputVersion);
    results.dataset.targets = targets;
  });
  const schedule = throttle(() => run(), 300);
  const rerun = () => { if (pad.dirty || pad.dropped) run(); };
  root.append(
    h("section", { class: "grid playground-number" },
      h("div", { class: "card pad-card wide" },
        h("div", { class: "card-head" }, h("h2", {}, "Your number"),
          h("span", { class: "muted small" }, "one line, left to right")),
        pad.element, pad.fileInput,
        h("div", { class: "row" },
          h("button", { type: "button", class: "ghost", onclick: () => pad.clear() }, "Clear"),
          h("button", { type: "button", class: "ghost", onclick: () => pad.fileInput.click() },
            "Choose a picture…")),
        timing),
      h("div", { class: "card result-card wide" },
        h("div", { class: "card-head" }, h("h2", {}, "ocr reads"), compareBar(ocr, state, rerun)),
        results)));
  if (!ocr || !ocr.latest) {
    results.replaceChildren(errorBox(new Error("the service has no ready version of ocr"),
                                     "Loading ocr"));
  }
}

// ---- the view ---------------------------------------------------------------------------

export async function playgroundView(root, { mode = "digit" } = {}) {
  const body = h("div", { class: "playground-body" }, h("p", { class: "loading" }, "Loading models…"));
  const switcher = h("div", { class: "segmented", role: "tablist" },
    MODES.map((entry) => h("a", {
      href: `#/playground/${entry.id}`, role: "tab", class: entry.id === mode ? "active" : "",
      "aria-selected": entry.id === mode ? "true" : "false", dataset: { testid: `mode-${entry.id}` },
    }, h("strong", {}, entry.title), h("span", {}, entry.hint))));
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Playground"),
        h("p", { class: "lede" }, "Ask the served models with your own handwriting. Every answer "
          + "comes from this server's API, on exactly the input the model received.")),
      switcher),
    body);
  let models;
  try {
    models = await catalog();
  } catch (error) {
    clear(body, errorBox(error, "Listing the models"));
    return;
  }
  clear(body);
  if (mode === "number") numberView(body, models);
  else if (mode === "other") genericView(body, models);
  else digitView(body, models);
  root.dataset.ready = "true";
  for (const model of models.values()) if (model.error) body.prepend(errorBox(model.error, model.name));
  if (!models.size) body.prepend(badge("no models are served", "bad"));
}
