// The API client: bearer session from sessionStorage, problem+json errors as ApiError, and the
// "as of block N" stamp of every answer that carries one.

const TOKEN = "registry.token";
const PRINCIPAL = "registry.principal";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.code = problem.code || "http_error";
    this.detail = problem.detail || "";
    this.fields = problem.fields || null;
    this.errors = problem.errors || null;
    this.error = problem.error || null;
  }
}

const listeners = new Set();
export let lastAsOf = null;

export function onAsOf(fn) { listeners.add(fn); }

function noteAsOf(body) {
  const stamp = body && typeof body === "object" ? body.as_of : null;
  if (stamp && typeof stamp.block === "number") {
    lastAsOf = { ...stamp, seen: Date.now() };
    for (const fn of listeners) fn(lastAsOf);
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get principal() {
    const raw = sessionStorage.getItem(PRINCIPAL);
    return raw ? JSON.parse(raw) : null;
  },
  save(token, principal) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(PRINCIPAL, JSON.stringify(principal));
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(PRINCIPAL);
  },
};

export function authHeaders() {
  const token = session.token;
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function api(path, { method = "GET", body, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, { title: "The registry does not answer", detail: String(err.message || err), code: "network" });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("registry:unauthorized", { detail: data }));
    throw new ApiError(response.status, data || {});
  }
  noteAsOf(data);
  return data;
}

// Server-Sent Events through fetch, so that the session travels in the Authorization header (an
// EventSource cannot send headers). Resumes after the last id it saw when the connection drops.
export function eventStream({ after = "0", onEvent, onState }) {
  const controller = new AbortController();
  let last = after;
  let stopped = false;
  async function run() {
    while (!stopped) {
      try {
        const response = await fetch(`/events/stream?after=${encodeURIComponent(last)}`, {
          headers: { Accept: "text/event-stream", ...authHeaders() },
          signal: controller.signal,
        });
        if (!response.ok) {
          let problem = {};
          try { problem = await response.json(); } catch { /* not JSON */ }
          onState?.("error", new ApiError(response.status, problem));
          if (response.status === 401 || response.status === 403) return;
        } else {
          onState?.("open");
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              let id = null, data = "";
              for (const line of block.split("\n")) {
                if (line.startsWith("id: ")) id = line.slice(4);
                else if (line.startsWith("data: ")) data += line.slice(6);
              }
              if (data) {
                if (id) last = id;
                onEvent(JSON.parse(data), id);
              }
            }
          }
        }
      } catch (err) {
        if (stopped) return;
        onState?.("error", err);
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 3000));
    }
  }
  run();
  return () => { stopped = true; controller.abort(); };
}
