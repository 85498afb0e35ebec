// The service's own API, as any client sees it: bearer tokens, `{"error": ...}` messages.
//
// When a route answers 401 with `WWW-Authenticate: Bearer`, the page asks for a token once
// (every request waiting at that moment shares the one question), keeps it in sessionStorage
// (this tab only) and retries. Admin routes use the admin token the dashboard asks for.

const TOKEN_KEY = "kerasserve.token";
const ADMIN_TOKEN_KEY = "kerasserve.adminToken";

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

let pendingPrompt = null;

export function apiToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function adminToken() {
  return sessionStorage.getItem(ADMIN_TOKEN_KEY) || "";
}

export function setAdminToken(token) {
  if (token) sessionStorage.setItem(ADMIN_TOKEN_KEY, token);
  else sessionStorage.removeItem(ADMIN_TOKEN_KEY);
}

function askForToken(reason) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const form = dialog.querySelector("form");
  const input = form.elements.token;
  document.getElementById("token-reason").textContent = reason;
  input.value = "";
  pendingPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = dialog.returnValue === "ok" ? input.value.trim() : "";
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      pendingPrompt = null;
      resolve(token);
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return pendingPrompt;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON: fall through to the status line
  }
  return text.trim().slice(0, 300) || `${response.status} ${response.statusText}`;
}

// fetch `path` on this origin; JSON in (`json`) and out. Throws ApiError with the service's
// own message for any non-2xx answer.
export async function api(path, { method = "GET", json, body, headers = {}, admin = false,
                                  as = "json" } = {}) {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const sent = { ...headers };
    const token = admin ? adminToken() || apiToken() : apiToken();
    if (token) sent.Authorization = `Bearer ${token}`;
    let payload = body;
    if (json !== undefined) {
      payload = JSON.stringify(json);
      sent["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, { method, body: payload, headers: sent, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, `the service did not answer (${error.message})`, path);
    }
    const challenged = /bearer/i.test(response.headers.get("WWW-Authenticate") || "");
    if (response.status === 401 && challenged && !admin) {
      const message = await errorMessage(response);
      const reason = token ? `The token was refused: ${message}` : message;
      const next = await askForToken(reason);
      if (!next) throw new ApiError(401, message, path);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response), path);
    if (as === "text") return response.text();
    if (as === "response") return response;
    return response.json();
  }
  throw new ApiError(401, "the service kept refusing the token", path);
}

// POST a picture (Blob or File) to a task endpoint as a multipart `file` upload, the way a
// browser form would: the service decides what it accepts and says why when it does not.
export function postPicture(path, picture) {
  const form = new FormData();
  form.append("file", picture, picture.name || "drawing.png");
  return api(path, { method: "POST", body: form });
}
