// The admin API from this page: relative URLs (so the console works under a proxy prefix),
// the token from sessionStorage in the Authorization header and nowhere else.

const TOKEN_KEY = "balancer.admin-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    const body = problem && typeof problem === "object" ? problem : {};
    super(describe(status, body));
    this.status = status;
    this.problem = body;
    this.code = body.code;
    this.field = body.field;
    this.errors = Array.isArray(body.errors) ? body.errors : [];
  }

  // 404 from the router (no such route) or 405: this server predates the endpoint.
  get missing() {
    return this.status === 405 || (this.status === 404 && (!this.code || this.code === "not-found"));
  }

  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

function describe(status, body) {
  if (status === 0) return "The server cannot be reached.";
  const title = body.title || `HTTP ${status}`;
  const detail = body.detail && body.detail !== title ? `: ${body.detail}` : "";
  return `${status} ${title}${detail}`;
}

export function apiUrl(path, query) {
  const url = new URL(`..${path}`, document.baseURI);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export async function call(path, { method = "GET", query, body, ifMatch, as } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const secret = as ?? token.get();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch !== undefined && ifMatch !== null) headers["If-Match"] = `"${ifMatch}"`;
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, null);
  }
  const raw = await response.text();
  let data = null;
  if (raw) {
    try {
      data = JSON.parse(raw);
    } catch {
      data = { detail: raw.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, status: response.status, etag: response.headers.get("ETag") };
}

