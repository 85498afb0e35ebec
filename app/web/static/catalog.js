// What the service serves: model names (from /metrics, which lists every known model without
// needing an admin token), each version's state (TF Serving status), labels and metadata.json
// (`/v2/models/{name}/versions/{v}/training`), and signatures (v2 metadata, ready versions).

import { api } from "./api.js";
import { parsePrometheus } from "./prometheus.js";

export async function modelNames() {
  const families = parsePrometheus(await api("/metrics", { as: "text" }));
  const names = new Set();
  for (const sample of families.get("kerasserve_model_versions") || []) {
    if (sample.labels.model) names.add(sample.labels.model);
  }
  return [...names].sort();
}

async function describeVersion(name, status) {
  const version = status.version;
  const ready = status.state === "AVAILABLE";
  const [record, signature] = await Promise.all([
    api(`/v2/models/${encodeURIComponent(name)}/versions/${version}/training`)
      .catch((error) => ({ failed: error })),
    ready ? api(`/v2/models/${encodeURIComponent(name)}/versions/${version}`)
      .catch((error) => ({ failed: error })) : Promise.resolve(null),
  ]);
  return {
    version: Number(version),
    state: status.state,
    error: record.error || (status.status && status.status.error_message) || "",
    labels: record.labels || [],
    metadata: record.metadata || {},
    recordError: record.failed || null,
    signature: signature && !signature.failed ? signature : null,
  };
}

export async function describeModel(name) {
  const status = await api(`/v1/models/${encodeURIComponent(name)}`);
  const versions = await Promise.all(
    status.model_version_status.map((entry) => describeVersion(name, entry)));
  versions.sort((a, b) => a.version - b.version);
  const labels = {};
  for (const entry of versions) for (const label of entry.labels) labels[label] = entry.version;
  const ready = versions.filter((entry) => entry.state === "AVAILABLE");
  return { name, versions, labels, ready, latest: ready.length ? ready[ready.length - 1] : null };
}

export async function loadCatalog() {
  const names = await modelNames();
  const models = await Promise.all(names.map((name) => describeModel(name)
    .catch((error) => ({ name, versions: [], labels: {}, ready: [], latest: null, error }))));
  return new Map(models.map((model) => [model.name, model]));
}

let cached = null;

// One catalogue for the page; `refresh` fetches it again (the dashboard's reload button).
export function catalog({ refresh = false } = {}) {
  if (!cached || refresh) {
    cached = loadCatalog();
    cached.catch(() => { cached = null; });
  }
  return cached;
}
