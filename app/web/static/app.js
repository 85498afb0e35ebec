// The page: three views behind hash routes (#/playground[/mode], #/models, #/live).

import { api } from "./api.js";
import { catalog } from "./catalog.js";
import { modelsView } from "./dashboard.js";
import { clear, errorBox, h } from "./dom.js";
import { liveView } from "./live.js";
import { playgroundView } from "./playground.js";

let current = null; // AbortController of the view on screen

function route() {
  const [view = "playground", mode] = location.hash.replace(/^#\/?/, "").split("/");
  return { view, mode };
}

async function show() {
  const { view, mode } = route();
  if (current) current.abort();
  current = new AbortController();
  const root = document.getElementById("view");
  clear(root);
  delete root.dataset.ready;
  root.dataset.view = view;
  for (const link of document.querySelectorAll(".tabs a")) {
    const active = link.dataset.view === view;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (view === "models") await modelsView(root);
    else if (view === "live") await liveView(root, current.signal);
    else await playgroundView(root, { mode });
  } catch (error) {
    root.append(errorBox(error, "Showing this view"));
  }
}

async function serverBadge() {
  const badge = document.getElementById("server-badge");
  try {
    const [info, models] = await Promise.all([api("/v2"), catalog()]);
    const ready = [...models.values()].filter((model) => model.latest).length;
    clear(badge, h("span", { class: "dot good" }), h("span", { class: "server-text" },
      `${info.name} ${info.version} · ${(info.device?.mode || "?").toUpperCase()} · `
      + `${ready}/${models.size} models ready`));
  } catch (error) {
    clear(badge, h("span", { class: "dot bad" }), h("span", { class: "server-text" }, error.message));
  }
}

window.addEventListener("hashchange", show);
show();
serverBadge();
