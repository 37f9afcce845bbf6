// The query API (/api/v1) with the bearer token the user logged in with. The token lives in
// sessionStorage only: it is gone when the tab closes, and never sent anywhere but this origin.

const KEY = "posture.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function logout() {
  sessionStorage.removeItem(KEY);
}

/** An API error: the HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, params, body) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  // Over the tenant's request quota (429): wait as the server says (Retry-After), a few times.
  for (let attempt = 1; ; attempt++) {
    r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status !== 429 || attempt >= 5) break;
    const wait = Math.min(Number(r.headers.get("Retry-After")) || 1, 10);
    await new Promise((done) => setTimeout(done, wait * 1000));
  }
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      message = (await r.json()).error || message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(r.status, message);
  }
  return r;
}

/** GET a JSON answer. */
export async function get(path, params) {
  return (await request("GET", path, params)).json();
}

/** POST a JSON body, returning the JSON answer. */
export async function post(path, body) {
  return (await request("POST", path, {}, body)).json();
}

/** GET `path` as CSV and hand it to the browser as a download named `name`. */
export async function download(path, params, name) {
  const r = await request("GET", path, { ...params, format: "csv" });
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** The tenant path prefix. */
export function tenantPath(tenant) {
  return `/api/v1/tenants/${encodeURIComponent(tenant)}`;
}
