// The dashboard's shell: hash routing, refreshing the current page every few seconds,
// the operator-token prompt, and the "live" indicator.

import {Unauthorized, Unreachable, getToken, setToken, takeTokenFromUrl} from "./api.js";
import {code, h, replace} from "./dom.js";
import {ago} from "./format.js";
import {clustersPage} from "./clusters.js";
import {deploymentPage, deploymentsPage} from "./deployments.js";
import {devicePage, devicesPage} from "./devices.js";
import {learningPage} from "./learning.js";
import {runPage} from "./learning-run.js";
import {overviewPage} from "./overview.js";
import {releasesPage} from "./releases.js";

const REFRESH_MS = 3000;

const ROUTES = [
  [/^\/?$/, "overview", overviewPage],
  [/^\/devices\/?$/, "devices", devicesPage],
  [/^\/devices\/([^/]+)$/, "devices", devicePage],
  [/^\/releases\/?$/, "releases", releasesPage],
  [/^\/deployments\/?$/, "deployments", deploymentsPage],
  [/^\/deployments\/([^/]+)$/, "deployments", deploymentPage],
  [/^\/learning\/?$/, "learning", learningPage],
  [/^\/learning\/([^/]+)$/, "learning", runPage],
  [/^\/clusters\/?$/, "clusters", clustersPage],
];

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const live = document.getElementById("live");
const liveText = document.getElementById("live-text");

let page = null;
let running = null;  // the refresh in flight, so refreshes never overlap
let lastOk = null;
let locked = false;  // waiting for a token: nothing is fetched

function route() {
  const [path, query = ""] = window.location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  for (const [pattern, nav, make] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    if (match[1] !== undefined) params.set("id", decodeURIComponent(match[1]));
    return {nav, make, params};
  }
  return {nav: null, make: notFound, params};
}

function notFound() {
  const el = h("div", {className: "page"}, h("h1", null, "Not found"),
    h("p", null, "This dashboard has no such page. ", h("a", {href: "#/"}, "Go to the overview"), "."));
  return {title: "Not found", el, update: async () => {}};
}

function show() {
  const {nav, make, params} = route();
  page = make(params, () => refresh());
  document.title = `${page.title} · fogline fleet`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  replace(main, page.el);
  if (!locked) refresh();
}

async function refresh() {
  if (running) return running;
  const current = page;
  running = (async () => {
    try {
      await current.update(Date.now() / 1000);
      lastOk = Date.now();
      setBanner(null);
      setLive("live", "live");
    } catch (err) {
      if (err instanceof Unauthorized) {
        askForToken(err.message);
      } else if (err instanceof Unreachable) {
        setLive("down", "controller unreachable");
        setBanner(`${err.message}; retrying every ${REFRESH_MS / 1000} s. The page shows what it last saw.`);
      } else {
        setLive("down", "error");
        setBanner(err.message);
        console.error(err);
      }
    } finally {
      running = null;
    }
  })();
  return running;
}

function setBanner(text) {
  banner.hidden = text === null;
  banner.textContent = text ?? "";
}

function setLive(state, text) {
  live.dataset.state = state;
  liveText.textContent = state === "live" && lastOk ? `live · updated ${ago(lastOk / 1000)}` : text;
}

function askForToken(reason) {
  locked = true;
  setLive("down", "token needed");
  setBanner(null);
  const had = getToken();
  const input = h("input", {type: "password", id: "token-input", autocomplete: "off", spellcheck: false,
    placeholder: "operator token", required: true});
  const form = h("form", {className: "token-form", onsubmit: (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    setToken(input.value);
    locked = false;
    show();
  }}, input, h("button", {type: "submit"}, "Use token"));
  replace(main, h("div", {className: "page token-prompt", id: "token-prompt"},
    h("h1", null, "Operator token needed"),
    h("p", {title: reason}, had ? "The controller refused the token this tab has." : "The controller needs its operator token to show the fleet."),
    h("p", null, "Paste the token from ", code("<data>/admin.token"),
      " — the file in the folder given to ", code("fogline controller --data"),
      " (by default ", code("fleet-data/admin.token"), "). The controller also prints a dashboard link with ",
      code("?token=…"), " when it starts."),
    form,
    h("p", {className: "muted small"}, "The token is kept in this browser tab only (session storage).")));
  input.focus();
}

function tick() {
  if (locked || document.hidden || page === null) return;
  refresh();
}

takeTokenFromUrl();
window.addEventListener("hashchange", () => {
  if (!locked) show();
});
document.addEventListener("visibilitychange", tick);
setInterval(tick, REFRESH_MS);
show();
