// The page's one way to reach the API: a bearer token (from ?access_token= or, in dev mode, /dev/token)
// and JSON in, JSON out, with the server's {"error": {"code", "message"}} turned into an ApiError.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

let tokenPromise = null;

async function fetchToken() {
  const fromUrl = new URLSearchParams(location.search).get("access_token");
  if (fromUrl) return fromUrl;
  const userId = localStorage.getItem("voice-user") || `user-${crypto.randomUUID().slice(0, 8)}`;
  localStorage.setItem("voice-user", userId);
  const response = await fetch("/dev/token", { method: "POST", body: JSON.stringify({ user_id: userId }) });
  if (!response.ok) throw new Error("no access token: open this page with ?access_token=<token>");
  return (await response.json()).access_token;
}

// One token for the call and every view; a failed attempt is forgotten so the next call tries again.
export function accessToken() {
  if (!tokenPromise) {
    tokenPromise = fetchToken().catch((error) => { tokenPromise = null; throw error; });
  }
  return tokenPromise;
}

export async function api(method, path, body) {
  const token = await accessToken();
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { /* a proxy's HTML error page: reported below */ }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.code ?? "http_error",
      data?.error?.message ?? `the server answered ${response.status}`);
  }
  return data;
}

// Small DOM helper for the views: el("li", {className: "x", dataset: {id: 1}}, "text", child, ...).
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
