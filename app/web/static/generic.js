// Any model: a form built from its v2 signature (named inputs with datatype and shape; JSON
// typed in or a JSON file), sent to `/v2/models/{name}[/versions/{v}]/infer`; outputs as tables.

import { api } from "./api.js";
import { clear, errorBox, h } from "./dom.js";

const PREFILL_LIMIT = 4096; // elements: bigger inputs start empty rather than as a wall of zeros
const TABLE_ROWS = 40;
const TABLE_COLUMNS = 16;

function zeros(shape) {
  if (!shape.length) return 0;
  const [first, ...rest] = shape;
  return Array.from({ length: first }, () => zeros(rest));
}

function exampleShape(shape) {
  return shape.map((dim) => (dim < 0 ? 1 : dim));
}

function shapeOf(value) {
  const shape = [];
  let current = value;
  while (Array.isArray(current)) {
    shape.push(current.length);
    current = current[0];
  }
  return shape;
}

function flatten(value, shape, path = "value") {
  if (!shape.length) return [value];
  if (!Array.isArray(value) || value.length !== shape[0]) {
    throw new Error(`${path} is not a rectangular array: expected ${shape[0]} items here`);
  }
  return value.flatMap((item, index) => flatten(item, shape.slice(1), `${path}[${index}]`));
}

function outputTable(output) {
  const { name, datatype, shape, data } = output;
  const columns = shape.length >= 2 ? shape[shape.length - 1] : Math.max(1, data.length);
  const rows = shape.length >= 2 ? data.length / columns : 1;
  const shownRows = Math.min(rows, TABLE_ROWS);
  const shownColumns = Math.min(columns, TABLE_COLUMNS);
  const leading = shape.slice(0, -1);
  const index = (row) => {
    const parts = [];
    let rest = row;
    for (let axis = leading.length - 1; axis >= 0; axis -= 1) {
      parts.unshift(rest % leading[axis]);
      rest = Math.floor(rest / leading[axis]);
    }
    return `[${parts.join(", ")}]`;
  };
  const format = (value) => (typeof value === "number" ? String(Number(value.toPrecision(6)))
    : String(value));
  const table = h("table", { class: "data" },
    h("thead", {}, h("tr", {}, shape.length >= 2 ? h("th", {}, "index") : null,
      Array.from({ length: shownColumns }, (_, column) => h("th", {}, column)))),
    h("tbody", {}, Array.from({ length: shownRows }, (_, row) => h("tr", {},
      shape.length >= 2 ? h("th", {}, index(row)) : null,
      Array.from({ length: shownColumns }, (_, column) =>
        h("td", {}, format(data[row * columns + column])))))));
  const cut = rows > shownRows || columns > shownColumns;
  return h("div", { class: "output", dataset: { testid: `output-${name}` } },
    h("div", { class: "output-head" }, h("strong", {}, name),
      h("code", {}, `${datatype} [${shape.join(", ")}]`)),
    h("div", { class: "table-scroll" }, table),
    cut ? h("p", { class: "muted small" },
      `showing ${shownRows} of ${rows} rows and ${shownColumns} of ${columns} columns`) : null);
}

function inputField(spec) {
  const concrete = exampleShape(spec.shape);
  const size = concrete.reduce((a, b) => a * b, 1);
  const textarea = h("textarea", { name: spec.name, rows: 4, spellcheck: false,
                                   dataset: { testid: `input-${spec.name}` } });
  textarea.value = size <= PREFILL_LIMIT
    ? JSON.stringify(spec.datatype === "BYTES" ? [""] : zeros(concrete)) : "";
  const file = h("input", { type: "file", accept: "application/json,.json",
                            "aria-label": `JSON file for ${spec.name}` });
  file.addEventListener("change", async () => {
    if (file.files[0]) textarea.value = await file.files[0].text();
  });
  return {
    spec,
    element: h("div", { class: "field" },
      h("div", { class: "field-head" }, h("strong", {}, spec.name),
        h("code", {}, `${spec.datatype} [${spec.shape.join(", ")}]`)),
      textarea,
      h("label", { class: "file-label small muted" }, "or load a JSON file ", file)),
    read() {
      let value;
      try {
        value = JSON.parse(textarea.value);
      } catch (error) {
        throw new Error(`input ${spec.name}: not valid JSON (${error.message})`);
      }
      const shape = shapeOf(value);
      return { name: spec.name, datatype: spec.datatype, shape: shape.length ? shape : [1],
               data: shape.length ? flatten(value, shape, spec.name) : [value] };
    },
  };
}

export function genericView(root, models) {
  const names = [...models.keys()];
  const preferred = names.find((name) => !["mnist", "deskew", "ocr"].includes(name)) || names[0];
  const modelSelect = h("select", { dataset: { testid: "generic-model" } },
    names.map((name) => h("option", { value: name }, name)));
  modelSelect.value = preferred || "";
  const versionSelect = h("select", { dataset: { testid: "generic-version" } });
  const form = h("form", { class: "generic-form" });
  const outputs = h("div", { class: "outputs", dataset: { testid: "generic-outputs" } });
  const signature = h("div", { class: "signature-note muted small" });

  async function build() {
    const model = models.get(modelSelect.value);
    clear(versionSelect, h("option", { value: "" }, "newest"),
      (model ? model.ready : []).map((entry) =>
        h("option", { value: String(entry.version) }, `version ${entry.version}`)));
    clear(outputs);
    clear(form, h("p", { class: "loading" }, "Reading the signature…"));
    let metadata;
    try {
      metadata = await api(`/v2/models/${encodeURIComponent(modelSelect.value)}`);
    } catch (error) {
      clear(form, errorBox(error, "Reading the signature"));
      return;
    }
    signature.textContent = `${metadata.platform} · versions ${metadata.versions.join(", ")} · ` +
      `${metadata.inputs.length} input(s), ${metadata.outputs.length} output(s)`;
    const fields = metadata.inputs.map(inputField);
    const submit = h("button", { type: "submit", class: "primary" }, "Run");
    clear(form, fields.map((field) => field.element), h("div", { class: "row end" }, submit));
    form.onsubmit = async (event) => {
      event.preventDefault();
      submit.disabled = true;
      outputs.dataset.state = "busy";
      try {
        const inputs = fields.map((field) => field.read());
        const version = versionSelect.value;
        const path = `/v2/models/${encodeURIComponent(modelSelect.value)}` +
          `${version ? `/versions/${version}` : ""}/infer`;
        const answer = await api(path, { method: "POST", json: { inputs } });
        clear(outputs,
          h("p", { class: "muted small" }, `${answer.model_name} version ${answer.model_version}`),
          answer.outputs.map(outputTable));
        outputs.dataset.state = "done";
      } catch (error) {
        clear(outputs, errorBox(error, "Inference"));
        outputs.dataset.state = "error";
      } finally {
        submit.disabled = false;
      }
    };
  }
  modelSelect.addEventListener("change", build);
  root.append(h("section", { class: "grid playground-generic" },
    h("div", { class: "card wide" },
      h("div", { class: "card-head" }, h("h2", {}, "Inputs"),
        h("div", { class: "compare" },
          h("label", {}, h("span", {}, "Model"), modelSelect),
          h("label", {}, h("span", {}, "version"), versionSelect))),
      signature, form),
    h("div", { class: "card wide" },
      h("div", { class: "card-head" }, h("h2", {}, "Outputs")), outputs)));
  if (preferred) build();
  else clear(form, h("p", { class: "empty-state" }, "The service serves no models."));
}
