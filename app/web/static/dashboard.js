// The model dashboard: every model and version, its state, labels, signature and what its
// metadata.json says, with figures where people would rather look than read.

import { adminToken, api, setAdminToken } from "./api.js";
import { confusionMatrix, lineChart } from "./charts.js";
import { catalog } from "./catalog.js";
import { badge, clear, errorBox, h, percent } from "./dom.js";

const STATE_TONES = { AVAILABLE: "good", LOADING: "warn", START: "warn", UNLOADING: "warn",
                      END: "bad" };
const STATE_WORDS = { AVAILABLE: "serving", LOADING: "loading", START: "waiting",
                      UNLOADING: "unloading", END: "not loaded" };

const METRIC_WORDS = {
  heldout_accuracy: "digits right",
  heldout_string_accuracy: "whole numbers right",
  heldout_character_error_rate: "characters wrong",
  heldout_angle_mae_deg: "mean angle error",
  heldout_scale_mae: "mean scale error",
};

function metricTile(key, value) {
  const words = METRIC_WORDS[key] || key.replace(/^heldout_/, "").replace(/_/g, " ");
  let shown = value.toFixed(3);
  if (/accuracy/.test(key)) shown = percent(value);
  else if (/character_error_rate/.test(key)) shown = percent(value, 2);
  else if (/_deg$/.test(key)) shown = `${value.toFixed(2)}°`;
  return h("div", { class: "metric" }, h("div", { class: "metric-value" }, shown),
    h("div", { class: "metric-name" }, words));
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, value]) => value !== undefined
    && value !== null && value !== "").map(([name, value]) => [h("dt", {}, name),
    h("dd", {}, value)]));
}

function signatureTable(entry) {
  const fromV2 = entry.signature;
  const fromFile = entry.metadata.signature;
  const rows = [];
  if (fromV2) {
    for (const [role, list] of [["input", fromV2.inputs], ["output", fromV2.outputs]]) {
      for (const spec of list) rows.push([role, spec.name, spec.datatype, spec.shape]);
    }
  } else if (fromFile) {
    for (const role of ["inputs", "outputs"]) {
      for (const [name, spec] of Object.entries(fromFile[role] || {})) {
        rows.push([role.slice(0, -1), name, spec.dtype, spec.shape]);
      }
    }
  }
  if (!rows.length) return h("p", { class: "muted" }, "No signature: the version is not loaded.");
  return h("div", { class: "table-scroll" }, h("table", { class: "data signature" },
    h("thead", {}, h("tr", {}, ["", "name", "type", "shape"].map((text) => h("th", {}, text)))),
    h("tbody", {}, rows.map(([role, name, type, shape]) => h("tr", {},
      h("td", {}, badge(role, role === "input" ? "accent" : "neutral")), h("td", {}, h("code", {}, name)),
      h("td", {}, h("code", {}, type)), h("td", {}, h("code", {}, `[${shape.join(", ")}]`)))))));
}

function notRecorded(what) {
  return h("div", { class: "not-recorded", dataset: { testid: "not-recorded" } },
    h("strong", {}, "not recorded"),
    h("span", {}, `${what} were not kept when this version was trained; versions trained from `
      + "now on record them."));
}

function figureCard(title, body, note, wide = false) {
  return h("figure", { class: wide ? "figure wide" : "figure" }, h("figcaption", {}, title), body,
    note ? h("p", { class: "muted small" }, note) : null);
}

function learningCurves(history) {
  if (!history || !Object.keys(history).length) return figureCard("Learning curves",
    notRecorded("Per-epoch losses and metrics"));
  const groups = new Map();
  for (const [name, values] of Object.entries(history)) {
    const group = /loss/.test(name) ? "loss" : name;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push({ name, values });
  }
  return [...groups.entries()].map(([group, series]) => figureCard(
    `Learning curve: ${group}`,
    h("div", { dataset: { testid: `curve-${group}` } },
      lineChart(series, { yLabel: group, title: `${group} by epoch` }),
      series.length > 1 ? h("div", { class: "legend" }, series.map((line, index) =>
        h("span", { class: `key series-${"abcd"[index % 4]}` }, line.name))) : null),
    `${series[0].values.length} epoch(s), training data`));
}

function strips(list) {
  return h("div", { class: "strips" }, list.map((strip) => {
    const image = h("img", { src: `data:image/png;base64,${strip.png}`, alt: `strip ${strip.text}`,
                             class: "strip-picture" });
    const right = strip.reading === strip.text;
    return h("div", { class: `strip-row ${right ? "right" : "wrong"}`, dataset: { testid: "heldout-strip" } },
      h("div", { class: "strip-cell" }, image),
      h("div", { class: "strip-text" },
        h("span", { class: "reading-small" }, strip.reading || "∅"),
        right ? badge("right", "good") : badge(`should be ${strip.text}`, "bad"),
        h("span", { class: "muted small" }, `${percent(strip.confidence)} confident`)));
  }));
}

function errorByAngle(figure) {
  const edges = figure.bin_edges_deg;
  const centres = edges.slice(0, -1).map((edge, index) => (edge + edges[index + 1]) / 2);
  const chart = lineChart([{ name: "angle error (°)", values: figure.angle_mae_deg }],
                          { xLabel: "true angle (°, counter-clockwise)",
                            yLabel: "mean abs. error (°)",
                            xTicks: centres.map((centre) => String(Math.round(centre))) });
  const total = figure.count.reduce((a, b) => a + b, 0);
  return h("div", { dataset: { testid: "error-by-angle" } }, chart,
    h("div", { class: "axis-note muted small" },
      `mean absolute angle error (°) of the ${total} held-out digits, by the angle they were `
      + `turned, in ${edges[1] - edges[0]}° bins`));
}

function figuresOf(model, entry) {
  const metadata = entry.metadata;
  const figures = metadata.figures || {};
  const history = metadata.training && metadata.training.history;
  const list = [learningCurves(history)].flat();
  if (model === "mnist" || figures.confusion_matrix) {
    list.push(figures.confusion_matrix
      ? figureCard("Confusion matrix, held-out digits",
        h("div", { dataset: { testid: "confusion-matrix" } },
          confusionMatrix(figures.confusion_matrix.counts, figures.confusion_matrix.labels)),
        "rows: the true digit; columns: what the model said")
      : figureCard("Confusion matrix, held-out digits", notRecorded("Held-out figures")));
  }
  if (model === "ocr" || figures.heldout_strips) {
    list.push(figures.heldout_strips
      ? figureCard("Held-out strips and their readings", strips(figures.heldout_strips),
        "composed from held-out digits; what the exported model read", true)
      : figureCard("Held-out strips and their readings", notRecorded("Held-out figures")));
  }
  if (model === "deskew" || figures.error_by_angle) {
    list.push(figures.error_by_angle
      ? figureCard("Angle error by true angle", errorByAngle(figures.error_by_angle))
      : figureCard("Angle error by true angle", notRecorded("Held-out figures")));
  }
  return list;
}

function describeData(data) {
  if (!data) return undefined;
  const rows = data.train_rows !== undefined
    ? ` · ${data.train_rows.toLocaleString()} training / ${data.heldout_rows.toLocaleString()} held-out rows`
    : "";
  return `${data.source}${rows}`;
}

function versionPanel(model, entry) {
  const metadata = entry.metadata || {};
  const training = metadata.training || {};
  const metrics = metadata.metrics || {};
  const created = metadata.created ? new Date(metadata.created) : null;
  const panel = h("div", { class: "version-panel", dataset: { testid: `panel-${model.name}-${entry.version}` } });
  if (entry.error) panel.append(errorBox(new Error(entry.error), "Loading this version"));
  if (entry.recordError) panel.append(errorBox(entry.recordError, "Reading metadata.json"));
  const hasMetadata = Object.keys(metadata).length > 0;
  panel.append(h("div", { class: "panel-grid" },
      h("div", {},
        h("h3", {}, metadata.data && metadata.data.heldout_rows
          ? `Held-out quality · ${metadata.data.heldout_rows} rows never trained on` : "Held-out quality"),
        Object.keys(metrics).length
          ? h("div", { class: "metrics" }, Object.entries(metrics).map(([key, value]) =>
            metricTile(key, value)))
          : h("p", { class: "muted" }, hasMetadata ? "No metrics recorded."
            : "No metadata.json: this version was not published by the training package."),
        h("h3", {}, "Signature"), signatureTable(entry)),
      h("div", {},
        h("h3", {}, "Training"),
        hasMetadata ? facts([
          ["created", created ? created.toLocaleString() : undefined],
          ["data", describeData(metadata.data)],
          ["epochs", training.epochs !== undefined
            ? `${training.epochs} × ${training.steps_per_epoch ?? "one pass of"} steps, batch ${training.batch_size}`
            : undefined],
          ["device", training.device ? `${training.device}${training.replicas > 1 ? ` × ${training.replicas}` : ""}, ${training.strategy} strategy` : undefined],
          ["wall time", training.wall_time_s !== undefined ? `${(training.wall_time_s / 60).toFixed(1)} min` : undefined],
          ["started from", training.init_from || undefined],
          ["code", metadata.code_revision ? metadata.code_revision.slice(0, 12) +
            (metadata.code_revision.endsWith("-dirty") ? " (with local edits)" : "") : undefined],
          ["decoder", metadata.decoder ? metadata.decoder.type : undefined],
        ]) : h("p", { class: "muted" }, "Nothing recorded."),
        hasMetadata ? h("details", { class: "raw" }, h("summary", {}, "metadata.json"),
          h("pre", {}, JSON.stringify({ ...metadata, figures: metadata.figures ? "(drawn below)" : undefined }, null, 2)))
          : null)));
  if (hasMetadata) panel.append(h("div", { class: "figures" }, figuresOf(model.name, entry)));
  return panel;
}

function modelCard(model) {
  const card = h("article", { class: "card model-card", dataset: { testid: `model-${model.name}` } });
  const head = h("div", { class: "model-head" },
    h("h2", {}, model.name),
    h("div", { class: "chips" },
      model.versions.map((entry) => badge(`v${entry.version} ${STATE_WORDS[entry.state] || entry.state}`,
                                          STATE_TONES[entry.state] || "neutral")),
      Object.entries(model.labels).sort().map(([label, version]) =>
        badge(`${label} → v${version}`, "accent"))));
  card.append(head);
  if (model.error) {
    card.append(errorBox(model.error, "Reading this model"));
    return card;
  }
  const tabs = h("div", { class: "version-tabs", role: "tablist" });
  const body = h("div", {});
  const select = (entry) => {
    for (const tab of tabs.children) {
      tab.classList.toggle("active", tab.dataset.version === String(entry.version));
      tab.setAttribute("aria-selected", tab.classList.contains("active") ? "true" : "false");
    }
    clear(body, versionPanel(model, entry));
  };
  for (const entry of model.versions) {
    tabs.append(h("button", { type: "button", role: "tab", dataset: { version: String(entry.version),
                                                                      testid: `tab-${model.name}-${entry.version}` },
                              onclick: () => select(entry) },
      `version ${entry.version}`, entry.labels.length ? ` · ${entry.labels.join(", ")}` : ""));
  }
  if (model.versions.length > 1) card.append(tabs);
  card.append(body);
  const newest = model.latest || model.versions[model.versions.length - 1];
  if (newest) select(newest);
  return card;
}

function adminPanel() {
  const output = h("div", { class: "admin-output" });
  const input = h("input", { type: "password", placeholder: "admin token", autocomplete: "off",
                             "aria-label": "admin token" });
  input.value = adminToken();
  async function show() {
    setAdminToken(input.value.trim());
    if (!adminToken()) {
      clear(output, h("p", { class: "muted small" }, "The repository index and config are admin "
        + "routes: give the admin token to see them."));
      return;
    }
    clear(output, h("p", { class: "loading" }, "Asking…"));
    const [index, config] = await Promise.all([
      api("/v2/repository/index", { method: "POST", json: {}, admin: true }).catch((e) => ({ e })),
      api("/v2/repository/config", { admin: true }).catch((e) => ({ e })),
    ]);
    clear(output,
      index.e ? errorBox(index.e, "Repository index") : h("div", { class: "table-scroll" }, h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["model", "version", "state", "reason"].map((t) => h("th", {}, t)))),
        h("tbody", {}, index.map((row) => h("tr", {}, h("td", {}, row.name), h("td", {}, row.version),
          h("td", {}, badge(row.state, row.state === "READY" ? "good" : "warn")),
          h("td", {}, row.reason || "")))))),
      config.e ? errorBox(config.e, "Repository config")
        : h("details", { class: "raw" }, h("summary", {}, "repository config in force"),
          h("pre", {}, JSON.stringify(config, null, 2))));
  }
  const form = h("form", { class: "row", onsubmit: (event) => { event.preventDefault(); show(); } },
    input, h("button", { type: "submit", class: "ghost" }, "Show"));
  if (adminToken()) show();
  else clear(output, h("p", { class: "muted small" }, "The repository index and config are admin "
    + "routes: give the admin token to see them."));
  return h("section", { class: "card admin" },
    h("div", { class: "card-head" }, h("h2", {}, "Repository (admin)"), form), output);
}

export async function modelsView(root) {
  const list = h("div", { class: "models", dataset: { testid: "models" } },
    h("p", { class: "loading" }, "Loading models…"));
  const reload = h("button", { type: "button", class: "ghost", onclick: () => load(true) }, "Reload");
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Models"),
        h("p", { class: "lede" }, "Every model and version this server knows: how it was trained, "
          + "how good it is on data it never saw, and what it expects.")),
      reload),
    list, adminPanel());
  async function load(refresh) {
    try {
      const models = await catalog({ refresh });
      clear(list, [...models.values()].map(modelCard));
      if (!models.size) clear(list, h("p", { class: "empty-state" }, "The service serves no models."));
      root.dataset.ready = "true";
    } catch (error) {
      clear(list, errorBox(error, "Listing the models"));
    }
  }
  await load(false);
}
