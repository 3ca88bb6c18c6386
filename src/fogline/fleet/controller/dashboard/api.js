// The controller's JSON API with the operator's bearer token.
//
// The token arrives once as ?token= in the dashboard's URL (the controller
// prints that link); it is moved to this tab's sessionStorage and removed from
// the address bar so it does not end up in bookmarks or screenshots.

const KEY = "fogline.operator-token";

/** The API answered 401: no token, or the wrong one. */
export class Unauthorized extends Error {}

/** The controller could not be reached at all. */
export class Unreachable extends Error {}

/** The API answered with an error; the message is the API's own. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  setToken(token);
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
}

export function getToken() {
  return window.sessionStorage.getItem(KEY);
}

export function setToken(token) {
  window.sessionStorage.setItem(KEY, token.trim());
}

/** GET (or POST with a JSON body) a path under the dashboard's own origin and folder. */
export async function api(path, {method = "GET", body} = {}) {
  const headers = {Accept: "application/json"};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new Unreachable(`cannot reach the controller (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) throw new Unauthorized(data?.error ?? "the operator token is missing or wrong");
  if (!response.ok) {
    throw new ApiError(data?.error ?? `${method} ${path}: HTTP ${response.status}`, response.status);
  }
  return data;
}
