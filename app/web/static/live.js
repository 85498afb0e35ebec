// Live figures from the service's own /metrics (parsed here) and its device report (GET /v2):
// request rate, p50/p99 latency, batch sizes and queue depth per model, every two seconds.

import { api } from "./api.js";
import { histogram, sparkline } from "./charts.js";
import { badge, clear, errorBox, h } from "./dom.js";
import { bucketDelta, buckets, parsePrometheus, quantile, splitBuckets, sumBy } from "./prometheus.js";

const PERIOD_MS = 2000;
const KEEP = 60; // samples per sparkline: the last two minutes
const M = "kerasserve";

function formatSeconds(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  return `${seconds.toFixed(2)} s`;
}

function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

function tile(name, value, spark, testid) {
  return h("div", { class: "tile", dataset: { testid } }, h("div", { class: "tile-name" }, name),
    h("div", { class: "tile-value" }, value), spark);
}

// A per-GPU map ({"GPU:0": 4096}) or a single value, in words.
function perGpu(value, words) {
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    return entries.length ? entries.map(([gpu, each]) => `${gpu}: ${words(each)}`).join(", ") : "";
  }
  return value === null || value === undefined || value === false ? "" : words(value);
}

function deviceCard(report, memory) {
  const device = report.device || {};
  const requested = device.requested || {};
  const gpus = device.physical_gpus || [];
  const limit = perGpu(device.gpu_memory_limit_mb, (mb) => `${mb} MB`)
    || perGpu(requested.gpu_memory_limit_mb, (mb) => `${mb} MB (requested)`);
  const growth = perGpu(device.gpu_memory_growth, (on) => (on ? "grows as needed" : "taken at start"))
    || (requested.gpu_memory_growth ? "grows as needed (requested)" : "");
  return h("div", { class: "card device", dataset: { testid: "device" } },
    h("div", { class: "card-head" }, h("h2", {}, "Device"),
      badge(`${(device.mode || "unknown").toUpperCase()}`, device.mode === "gpu" ? "accent" : "neutral")),
    h("dl", { class: "facts" },
      h("dt", {}, "server"), h("dd", {}, `${report.name} ${report.version}`),
      h("dt", {}, "GPUs"), h("dd", {}, gpus.length ? gpus.join(", ") : "none visible"),
      h("dt", {}, "devices"), h("dd", {}, (device.logical_devices || []).join(", ") || "–"),
      h("dt", {}, "GPU memory"), h("dd", {}, gpus.length
        ? [limit ? `limit ${limit}` : "no limit", growth].filter(Boolean).join("; ")
        : "no GPU: none used"),
      h("dt", {}, "requested"), h("dd", {}, `--device ${requested.device || device.mode || "auto"}`),
      h("dt", {}, "threads"), h("dd", {}, `intra-op ${device.intra_op_threads || "auto"}, `
        + `inter-op ${device.inter_op_threads || "auto"}`),
      h("dt", {}, "extensions"), h("dd", {}, (report.extensions || []).join(", "))),
    memory,
    (device.notes || []).map((note) => h("p", { class: "muted small" }, note)));
}

export async function liveView(root, signal) {
  const summary = h("div", { class: "tiles", dataset: { testid: "live-summary" } });
  const perModel = h("div", { class: "live-models" });
  const device = h("div", {}, h("p", { class: "loading" }, "Reading the device report…"));
  const updated = h("span", { class: "muted small", "aria-live": "off" });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Live"),
        h("p", { class: "lede" }, "This server's own metrics, read every two seconds from ",
          h("code", {}, "/metrics"), ".")),
      updated),
    h("section", { class: "grid live-grid" },
      h("div", { class: "card wide" }, h("div", { class: "card-head" }, h("h2", {}, "All traffic")),
        summary),
      device),
    perModel);

  const memory = h("dl", { class: "facts memory" });
  api("/v2").then((report) => clear(device, deviceCard(report, memory)))
    .catch((error) => clear(device, errorBox(error, "Device report")));

  const history = new Map(); // key -> values
  const push = (key, value) => {
    if (!history.has(key)) history.set(key, []);
    const values = history.get(key);
    values.push(value);
    if (values.length > KEEP) values.shift();
    return values;
  };
  let previous = null;

  async function poll() {
    let families;
    try {
      families = parsePrometheus(await api("/metrics", { as: "text" }));
    } catch (error) {
      clear(summary, errorBox(error, "Reading /metrics"));
      return;
    }
    const now = performance.now();
    const seconds = previous ? (now - previous.time) / 1000 : 0;
    const requests = sumBy(families, `${M}_requests_total`, "model");
    const total = [...requests.values()].reduce((a, b) => a + b, 0);
    const latency = buckets(families, `${M}_request_duration_seconds`, (l) => l.model !== "");
    const window = previous ? bucketDelta(latency, previous.latency) : latency;
    const rate = previous && seconds > 0 ? Math.max(0, total - previous.total) / seconds : 0;
    const resident = (families.get(`${M}_process_resident_memory_bytes`) || [])[0];
    const recent = window.length && window[window.length - 1].count > 0;
    const shownAll = recent ? window : latency;
    const when = recent ? "last 2 s" : "since start";
    const p50 = quantile(shownAll, 0.5);
    const p99 = quantile(shownAll, 0.99);
    clear(summary,
      tile("requests / s", rate.toFixed(1), sparkline(push("rate", rate)), "rate"),
      tile(`p50 latency, ${when}`, formatSeconds(p50), sparkline(push("p50", p50 || 0)), "p50"),
      tile(`p99 latency, ${when}`, formatSeconds(p99), sparkline(push("p99", p99 || 0)), "p99"),
      tile("requests so far", total.toLocaleString(), null, "total"));
    clear(memory,
      h("dt", {}, "process memory"), h("dd", {}, formatBytes(resident ? resident.value : NaN)),
      (families.get(`${M}_gpu_memory_in_use_bytes`) || []).map((sample) => [
        h("dt", {}, `${sample.labels.device} in use`), h("dd", {}, formatBytes(sample.value))]));

    const names = new Set();
    for (const sample of families.get(`${M}_model_versions`) || []) names.add(sample.labels.model);
    const cards = [...names].sort().map((name) => {
      const own = (labels) => labels.model === name;
      const count = sumBy(families, `${M}_requests_total`, "model", own).get(name) || 0;
      const before = previous ? previous.requests.get(name) || 0 : count;
      const modelRate = previous && seconds > 0 ? Math.max(0, count - before) / seconds : 0;
      const modelLatency = buckets(families, `${M}_request_duration_seconds`, own);
      const modelWindow = previous
        ? bucketDelta(modelLatency, previous.models.get(name)?.latency) : modelLatency;
      const windowHas = modelWindow.length && modelWindow[modelWindow.length - 1].count > 0;
      const shown = windowHas ? modelWindow : modelLatency;
      const batches = buckets(families, `${M}_batch_size_rows`, own);
      const allSplit = splitBuckets(batches);
      // Bars up to the largest batch seen (and one more), not all the way to 512 rows.
      const lastUsed = allSplit.reduce((last, b, index) => (b.count > 0 ? index : last), 0);
      const split = allSplit.slice(0, Math.min(allSplit.length, Math.max(lastUsed + 2, 4)));
      const batchCount = batches.length ? batches[batches.length - 1].count : 0;
      const rowSum = sumBy(families, `${M}_batch_size_rows_sum`, "model", own).get(name) || 0;
      const queue = sumBy(families, `${M}_queue_depth_rows`, "model", own).get(name) || 0;
      const states = sumBy(families, `${M}_model_versions`, "state", own);
      const serving = states.get("AVAILABLE") || 0;
      const edges = split.map((b) => (b.le === Infinity ? "more" : String(b.le)));
      return { name, latency: modelLatency, element: h("div", { class: "card live-model", dataset: { testid: `live-${name}` } },
        h("div", { class: "card-head" }, h("h2", {}, name),
          badge(`${serving} version${serving === 1 ? "" : "s"} serving`, serving ? "good" : "bad")),
        h("div", { class: "tiles compact" },
          tile("requests / s", modelRate.toFixed(1), sparkline(push(`${name}:rate`, modelRate))),
          tile(`p50, ${windowHas ? "last 2 s" : "since start"}`, formatSeconds(quantile(shown, 0.5)),
               sparkline(push(`${name}:p50`, quantile(shown, 0.5) || 0))),
          tile(`p99, ${windowHas ? "last 2 s" : "since start"}`, formatSeconds(quantile(shown, 0.99)),
               sparkline(push(`${name}:p99`, quantile(shown, 0.99) || 0))),
          tile("queue depth", `${queue} rows`, sparkline(push(`${name}:queue`, queue))),
          tile("mean batch", batchCount ? `${(rowSum / batchCount).toFixed(1)} rows` : "–",
               sparkline(push(`${name}:batch`, batchCount ? rowSum / batchCount : 0)))),
        batchCount ? h("div", { class: "batch-hist" },
          h("div", { class: "muted small" }, `rows per batch, ${batchCount.toLocaleString()} batches`),
          histogram(split.map((b) => b.count), edges, { title: "rows per batch" }))
          : h("p", { class: "muted small" }, "No batches yet: send it something from the playground.")) };
    });
    clear(perModel, cards.map((card) => card.element));
    previous = { time: now, total, latency, requests,
                 models: new Map(cards.map((card) => [card.name, { latency: card.latency }])) };
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    root.dataset.ready = "true";
  }

  await poll();
  const timer = setInterval(() => {
    if (!document.hidden) poll();
  }, PERIOD_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
