// The REST client: every call goes to this gateway's public /v1 API with the token.

const TOKEN_KEY = "facegrid.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  save: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An error answered by the API, in the FindFace format: {code, reason, param}. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.reason || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "HTTP_ERROR";
    this.param = body?.param;
  }
}

/** Encodes one path segment (gallery names, meta). */
export const seg = (value) => encodeURIComponent(String(value));

/**
 * Calls the API. `path` is under /v1 ("/galleries") or a full API path from a response
 * ("/v1/faces/...?max_id=..."); `json` is sent as a JSON body, `form` (an object of strings,
 * Blobs and Files) as multipart.
 */
export async function call(method, path, { json, form, token, signal } = {}) {
  const headers = { Authorization: `Token ${token ?? session.token() ?? ""}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new FormData();
    for (const [name, value] of Object.entries(form)) {
      if (value === undefined || value === null) continue;
      if (value instanceof Blob) body.append(name, value, value.name || name);
      else body.append(name, String(value));
    }
  }
  const url = path.startsWith("/v1/") ? path : `/v1${path}`;
  const response = await fetch(url, { method, headers, body, signal });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent("facegrid:unauthorized"));
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path, options) => call("GET", path, options);

/**
 * Follows the live event stream (Server-Sent Events) with the token in a header, which
 * EventSource cannot send. Calls onOpen() once connected, then onEvent(body) for each face
 * event until signal aborts.
 */
export async function follow(path, onEvent, signal, onOpen = () => {}) {
  const response = await fetch(`/v1${path}`, {
    headers: { Authorization: `Token ${session.token() ?? ""}`, Accept: "text/event-stream" },
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}
