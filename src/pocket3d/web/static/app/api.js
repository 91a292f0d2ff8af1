// The HTTP API as the app uses it: the key (kept in sessionStorage only, sent as a Bearer header), JSON calls that
// throw ApiError with the server's error body, uploads with progress, and a job's Server-Sent Events read over
// fetch (EventSource cannot send headers, and a key must never go into a URL).

const API = "api/v1";
const KEY = "pocket3d.key";
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
  headers() { return this.key ? { Authorization: `Bearer ${this.key}` } : {}; },
};

/** An error answer of the API: error_code, message, hint and request_id as the server sent them. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error_code || "HTTP_" + status;
    this.hint = body.hint || null;
    this.requestId = body.request_id || null;
    this.details = body.details || {};
  }
}

async function failure(response) {
  let body = {};
  try { body = await response.json(); } catch { body = { message: `${response.status} ${response.statusText}` }; }
  const error = new ApiError(response.status, body);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("pocket3d:unauthorized", { detail: error }));
  return error;
}

/** A call to the API: `path` is relative to /api/v1; `json` is sent as the body. Answers the parsed JSON. */
export async function api(path, { method = "GET", json, signal } = {}) {
  const headers = { ...auth.headers(), Accept: "application/json" };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${API}${path}`, {
    method, headers, signal, body: json === undefined ? undefined : JSON.stringify(json),
  });
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/** A download as a Blob (outputs, uploads), sent with the key. `url` is what the API lists (/api/v1/...). */
export async function fetchBlob(url, { signal } = {}) {
  const response = await fetch(url.replace(/^\//, ""), { headers: auth.headers(), signal });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/** POST /files with upload progress (fetch has none): resolves to the FileInfo. */
export function upload(file, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/files`);
    for (const [name, value] of Object.entries(auth.headers())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { body = { message: `${xhr.status} ${xhr.statusText}` }; }
      if (xhr.status === 201) resolve(body);
      else {
        const error = new ApiError(xhr.status, body);
        if (xhr.status === 401) window.dispatchEvent(new CustomEvent("pocket3d:unauthorized", { detail: error }));
        reject(error);
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { message: "the upload did not reach the server" }));
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    xhr.send(form);
  });
}

/** Follow a job: `onJob(view)` for every event until the job ends or `signal` aborts. Reconnects with
 * Last-Event-ID when the connection drops. Resolves with the last view. */
export async function follow(jobId, onJob, signal) {
  let lastId = null;
  let last = null;
  for (let attempt = 0; !signal.aborted; attempt++) {
    const headers = { ...auth.headers(), Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(`${API}/jobs/${jobId}/events`, { headers, signal });
    } catch (e) {
      if (signal.aborted) break;
      await pause(Math.min(8000, 500 * 2 ** attempt), signal);
      continue;
    }
    if (!response.ok) throw await failure(response);
    try {
      for await (const event of readEvents(response.body, signal)) {
        if (event.id) lastId = event.id;
        if (event.event === "error") throw new ApiError(401, JSON.parse(event.data));
        if (event.event !== "status" && event.event !== "progress") continue;
        last = JSON.parse(event.data);
        onJob(last);
        attempt = 0;
      }
    } catch (e) {
      if (e instanceof ApiError) throw e;
      if (signal.aborted) break;  // otherwise the connection dropped: reconnect after a pause
    }
    if (last && FINAL.has(last.status)) break;
    await pause(Math.min(8000, 500 * 2 ** attempt), signal);
  }
  return last;
}

/** The events of a text/event-stream body, as {event, id, data}. */
async function* readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { event: "message", id: null, data: "" };
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
          else if (field === "event") event.event = text;
          else if (field === "id") event.id = text;
        }
        if (data.length) { event.data = data.join("\n"); yield event; }
      }
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    reader.releaseLock();
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
