// Prometheus' text exposition format -> Map(metric name -> [{labels, value}]), and the
// arithmetic the live view needs: sums by label, rates, quantiles from histogram buckets.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescape(value) {
  return value.replace(/\\(["\\n])/g, (_, char) => (char === "n" ? "\n" : char));
}

export function parsePrometheus(text) {
  const families = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || "").matchAll(LABEL)) labels[key] = unescape(value);
    const value = match[3] === "+Inf" ? Infinity : Number(match[3]);
    if (!families.has(match[1])) families.set(match[1], []);
    families.get(match[1]).push({ labels, value });
  }
  return families;
}

// Sum of a metric's samples grouped by one label (e.g. requests by model).
export function sumBy(families, name, label, filter = () => true) {
  const totals = new Map();
  for (const sample of families.get(name) || []) {
    if (!filter(sample.labels)) continue;
    const key = sample.labels[label] ?? "";
    totals.set(key, (totals.get(key) || 0) + sample.value);
  }
  return totals;
}

// Cumulative histogram buckets of `name` for samples matching `filter`, summed over every
// other label: [{le, count}] sorted by le.
export function buckets(families, name, filter = () => true) {
  const byEdge = new Map();
  for (const sample of families.get(`${name}_bucket`) || []) {
    if (!filter(sample.labels)) continue;
    const le = sample.labels.le === "+Inf" ? Infinity : Number(sample.labels.le);
    byEdge.set(le, (byEdge.get(le) || 0) + sample.value);
  }
  return [...byEdge.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

// Bucket counts of `now` minus those of `before` (same edges): what happened in between.
export function bucketDelta(now, before) {
  if (!before || before.length !== now.length) return now;
  return now.map((bucket, index) => ({ le: bucket.le,
                                       count: Math.max(0, bucket.count - before[index].count) }));
}

// The q-quantile of cumulative buckets, interpolated linearly inside the bucket it falls in
// (what Prometheus' histogram_quantile does). NaN without observations.
export function quantile(cumulative, q) {
  if (!cumulative.length) return NaN;
  const total = cumulative[cumulative.length - 1].count;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let previousEdge = 0;
  let previousCount = 0;
  for (const { le, count } of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return previousEdge;
      const inBucket = count - previousCount;
      const fraction = inBucket > 0 ? (rank - previousCount) / inBucket : 0;
      return previousEdge + (le - previousEdge) * fraction;
    }
    previousEdge = le;
    previousCount = count;
  }
  return previousEdge;
}

// Cumulative buckets -> per-bucket counts with readable labels ("≤1", "2", ... "+Inf").
export function splitBuckets(cumulative) {
  let previous = 0;
  return cumulative.map(({ le, count }) => {
    const own = count - previous;
    previous = count;
    return { le, count: own };
  });
}
