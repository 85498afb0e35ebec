// SVG figures drawn from plain numbers: bars, lines, heat maps, sparklines.
// Every chart scales with its container (viewBox); colours come from the stylesheet classes.

import { s } from "./dom.js";

const SERIES_CLASSES = ["series-a", "series-b", "series-c", "series-d"];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// A round step (1, 2, 2.5 or 5 times a power of ten) at least `raw`.
function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (raw <= step * power * (1 + 1e-9)) return step * power;
  }
  return 10 * power;
}

function formatTick(value) {
  if (value === 0) return "0";
  return String(Number(value.toPrecision(3)));
}

// Ten probabilities (or any values in [0, max]) as vertical bars; `highlight` marks one bar.
export function barChart(values, labels, { highlight = -1, max = 1, series = 0,
                                            title = "", width = 320 } = {}) {
  const height = 170;
  const top = 18;
  const bottom = 22;
  const plot = height - top - bottom;
  const slot = width / values.length;
  const bar = slot * 0.68;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars",
                         role: "img", "aria-label": title || "bar chart" });
  svg.append(s("line", { x1: 0, x2: width, y1: top + plot, y2: top + plot, class: "axis" }));
  values.forEach((value, index) => {
    const clamped = Math.max(0, Math.min(value / max, 1));
    const barHeight = Math.max(clamped * plot, value > 0 ? 1 : 0);
    const x = index * slot + (slot - bar) / 2;
    const chosen = index === highlight;
    svg.append(s("rect", {
      x, y: top + plot - barHeight, width: bar, height: barHeight, rx: 3,
      class: `bar ${SERIES_CLASSES[series]}${chosen ? " chosen" : ""}`,
    }, s("title", {}, `${labels[index]}: ${(value * 100).toFixed(2)}%`)));
    if (value >= 0.01) {
      svg.append(s("text", { x: x + bar / 2, y: top + plot - barHeight - 4,
                             class: `bar-value${chosen ? " chosen" : ""}` },
                   value >= 0.995 ? "100" : (value * 100).toFixed(0)));
    }
    svg.append(s("text", { x: x + bar / 2, y: height - 6,
                           class: `bar-label${chosen ? " chosen" : ""}` }, labels[index]));
  });
  return svg;
}

// Lines over a shared x axis (epochs): [{name, values}], y from 0 (or the data's minimum).
export function lineChart(series, { xLabel = "epoch", yLabel = "", title = "",
                                    xTicks = null } = {}) {
  const width = 360;
  const height = 200;
  const left = 40;
  const right = 10;
  const top = 12;
  const bottom = 30;
  const points = Math.max(...series.map((line) => line.values.length));
  const all = series.flatMap((line) => line.values).filter(Number.isFinite);
  const low = Math.min(0, ...all);
  const step = niceStep((Math.max(...all, low + 1e-9) - low) / 4);
  const ticks = Math.max(1, Math.ceil((Math.max(...all, low + 1e-9) - low) / step - 1e-9));
  const high = low + ticks * step;
  const x = (index) => left + (points <= 1 ? (width - left - right) / 2
    : (index * (width - left - right)) / (points - 1));
  const y = (value) => top + (1 - (value - low) / (high - low || 1)) * (height - top - bottom);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart lines", role: "img",
                         "aria-label": title || `${yLabel} by ${xLabel}` });
  for (let tick = 0; tick <= ticks; tick += 1) {
    const value = low + step * tick;
    svg.append(s("line", { x1: left, x2: width - right, y1: y(value), y2: y(value),
                           class: tick === 0 ? "axis" : "grid" }));
    svg.append(s("text", { x: left - 6, y: y(value) + 4, class: "tick end" }, formatTick(value)));
  }
  const every = Math.max(1, Math.ceil(points / 8));
  for (let index = 0; index < points; index += every) {
    svg.append(s("text", { x: x(index), y: height - bottom + 16, class: "tick" },
                 xTicks ? xTicks[index] : index + 1));
  }
  svg.append(s("text", { x: (left + width - right) / 2, y: height - 2, class: "axis-label" },
               xLabel));
  series.forEach((line, number) => {
    const cls = SERIES_CLASSES[number % SERIES_CLASSES.length];
    const path = line.values.map((value, index) =>
      `${index ? "L" : "M"}${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    svg.append(s("path", { d: path, class: `line ${cls}` }));
    line.values.forEach((value, index) => {
      svg.append(s("circle", { cx: x(index), cy: y(value), r: 2.6, class: `dot ${cls}` },
                   s("title", {}, `${line.name}, ${xLabel} ${xTicks ? xTicks[index] : index + 1}: `
                     + formatTick(value))));
    });
  });
  return svg;
}

// A matrix of counts (rows: truth, columns: prediction) with the diagonal in the good colour.
export function confusionMatrix(counts, labels) {
  const n = counts.length;
  const cell = 26;
  const left = 34;
  const top = 30;
  const size = left + n * cell + 4;
  const svg = s("svg", { viewBox: `0 0 ${size} ${top + n * cell + 6}`, class: "chart matrix",
                         role: "img", "aria-label": "confusion matrix" });
  const rowTotals = counts.map((row) => row.reduce((a, b) => a + b, 0) || 1);
  svg.append(s("text", { x: left + (n * cell) / 2, y: 10, class: "axis-label" }, "predicted"));
  svg.append(s("text", { x: 8, y: top + (n * cell) / 2, class: "axis-label vertical",
                         transform: `rotate(-90 8 ${top + (n * cell) / 2})` }, "true"));
  labels.forEach((label, index) => {
    svg.append(s("text", { x: left + index * cell + cell / 2, y: top - 6, class: "tick" }, label));
    svg.append(s("text", { x: left - 8, y: top + index * cell + cell / 2 + 4, class: "tick end" },
                 label));
  });
  counts.forEach((row, truth) => row.forEach((count, predicted) => {
    const share = count / rowTotals[truth];
    const diagonal = truth === predicted;
    const level = count === 0 ? 0 : Math.min(5, 1 + Math.floor(share * 5));
    const x = left + predicted * cell;
    const y = top + truth * cell;
    svg.append(s("rect", { x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, rx: 3,
                           class: `cell ${diagonal ? "good" : "bad"} level-${level}` },
                 s("title", {}, `true ${labels[truth]}, predicted ${labels[predicted]}: ${count}`)));
    if (count) {
      svg.append(s("text", { x: x + cell / 2, y: y + cell / 2 + 4,
                             class: `cell-value${level >= 4 ? " inverse" : ""}` }, count));
    }
  }));
  return svg;
}

// Per-step probabilities [T][C] as a heat strip: one column per step, one row per class
// (the blank, last, drawn as the bottom row). `width` matches the picture above it.
export function heatStrip(steps, classLabels, { width, stepWidth, rowHeight = 11 } = {}) {
  const classes = classLabels.length;
  const height = classes * rowHeight;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart heat",
                         role: "img", "aria-label": "per-step probabilities",
                         preserveAspectRatio: "none" });
  steps.forEach((probabilities, t) => {
    probabilities.forEach((p, c) => {
      if (p < 0.02) return;
      svg.append(s("rect", { x: t * stepWidth, y: c * rowHeight, width: stepWidth + 0.2,
                             height: rowHeight, class: `heat-cell ${c === classes - 1 ? "blank" : ""}`,
                             "fill-opacity": Math.min(1, 0.08 + p).toFixed(3) },
                   s("title", {}, `step ${t + 1}: ${classLabels[c]} ${(p * 100).toFixed(1)}%`)));
    });
  });
  for (let c = 0; c < classes; c += 1) {
    svg.append(s("line", { x1: 0, x2: width, y1: (c + 1) * rowHeight, y2: (c + 1) * rowHeight,
                           class: "heat-grid" }));
  }
  return svg;
}

// The last values of a live series, as a small line (no axes).
export function sparkline(values, { height = 36, width = 140 } = {}) {
  const finite = values.map((value) => (Number.isFinite(value) ? value : 0));
  const high = Math.max(...finite, 1e-9);
  const step = finite.length > 1 ? width / (finite.length - 1) : width;
  const points = finite.map((value, index) =>
    `${(index * step).toFixed(1)},${(height - 2 - (value / high) * (height - 4)).toFixed(1)}`);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark",
                         preserveAspectRatio: "none", "aria-hidden": "true" });
  if (points.length > 1) {
    svg.append(s("path", { d: `M0,${height} L${points.join(" L")} L${width},${height} Z`,
                           class: "spark-fill" }));
    svg.append(s("path", { d: `M${points.join(" L")}`, class: "spark-line" }));
  }
  return svg;
}

// A histogram from bucket edges and counts (Prometheus' cumulative buckets already split).
export function histogram(counts, labels, { title = "" } = {}) {
  const total = counts.reduce((a, b) => a + b, 0) || 1;
  return barChart(counts.map((count) => count / total), labels,
                  { max: niceMax(Math.max(...counts) / total), series: 1, title });
}
