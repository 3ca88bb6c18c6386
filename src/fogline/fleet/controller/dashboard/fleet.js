// What the pages share about devices, releases and time ranges.

import {badge, code, h} from "./dom.js";
import {compareVersions, timeAgo} from "./format.js";

export const RANGES = [[900, "15 min"], [3600, "1 h"], [6 * 3600, "6 h"], [86400, "24 h"]];
const RANGE_KEY = "fogline.range";

/** The chart period in seconds, kept for the tab so every page shows the same one. */
export function chartRange() {
  const saved = Number(window.sessionStorage.getItem(RANGE_KEY));
  return RANGES.some(([v]) => v === saved) ? saved : 3600;
}

/** A select for the chart period; `changed()` runs after the choice is saved. */
export function rangeSelect(changed) {
  const select = h("select", {className: "range", "aria-label": "chart period",
    onchange: () => {
      window.sessionStorage.setItem(RANGE_KEY, select.value);
      changed();
    }},
  RANGES.map(([value, label]) => h("option", {value: String(value)}, `last ${label}`)));
  select.value = String(chartRange());
  return select;
}

/** Every release name the devices report, sorted. */
export function releaseNames(devices) {
  const names = new Set();
  for (const device of devices) {
    for (const name of Object.keys(device.state?.releases ?? {})) names.add(name);
  }
  return [...names].sort();
}

/** Why throughput, latency and error charts are empty where only model releases run. */
export const NO_WORKLOAD = "no workload: a model release runs only its health check; throughput, "
  + "latency and errors appear when a pipeline or serve release runs";

/**
 * Whether the devices run at least one release and every one is of kind "model" (per `releases`,
 * the repository's documents): a model release has no workload, so it reports no telemetry.
 */
export function runsOnlyModels(devices, releases) {
  const kinds = new Map(releases.map((r) => [`${r.name}@${r.version}`, r.kind]));
  const running = devices.flatMap((d) => Object.entries(d.state?.releases ?? {}))
    .filter(([, status]) => status.version);
  return running.length > 0 && running.every(([name, status]) => kinds.get(`${name}@${status.version}`) === "model");
}

/** Phases that mean "on its way to a new version". */
export const MOVING = new Set(["pending", "downloading", "verifying", "staging", "checking"]);

/** The worst problem a device reports, or null: failed health, a failed or refused release. */
export function problem(device) {
  const releases = Object.entries(device.state?.releases ?? {});
  for (const [name, status] of releases) {
    if (status.phase === "failed" || status.phase === "refused") {
      return `${name}: ${status.phase}${status.error ? ` — ${status.error}` : ""}`;
    }
  }
  if (device.state?.health === "failed") return "health check failed";
  return null;
}

/** The last error any release of the device reported (also after it recovered). */
export function lastError(device) {
  let found = null;
  for (const [name, status] of Object.entries(device.state?.releases ?? {})) {
    if (status.error && (found === null || status.since > found.since)) {
      found = {text: `${name}: ${status.error}`, since: status.since};
    }
  }
  return found?.text ?? null;
}

/** "1.1.0 active", or "1.0.0 → 1.1.0 downloading", as table cell content. */
export function releaseCell(status, {phase = true} = {}) {
  if (!status) return h("span", {className: "muted"}, "—");
  const moving = status.target && status.target !== status.version;
  return h("span", {className: "release-cell"},
    status.version ? code(status.version) : h("span", {className: "muted"}, "none"),
    moving ? [h("span", {className: "arrow"}, " → "), code(status.target)] : null,
    phase ? [" ", badge(status.phase, status.error ?? null)] : null);
}

/** The online dot and word. */
export function online(device) {
  return h("span", {className: `presence ${device.online ? "on" : "off"}`},
    h("i"), device.online ? "online" : "offline");
}

/** A stable colour index per version of a release: the newest gets the first colour. */
export function versionColours(versions) {
  const sorted = [...versions].sort(compareVersions).reverse();
  return new Map(sorted.map((v, i) => [v, i % 8]));
}

/** Counts per status of each wave: [{wave, total, counts: {status: n}}]. */
export function waves(deployment) {
  const out = [];
  for (const device of deployment.devices ?? []) {
    while (out.length <= device.wave) out.push({wave: out.length, total: 0, counts: {}});
    const wave = out[device.wave];
    wave.total += 1;
    wave.counts[device.status] = (wave.counts[device.status] ?? 0) + 1;
  }
  return out;
}

export const DEPLOY_STATUSES = ["converged", "assigned", "waiting", "failed", "rolled-back"];

/** How a strategy cuts a group, in words. */
export function strategyText(strategy) {
  const bake = `bake ${strategy.bake_seconds} s, timeout ${strategy.timeout_seconds} s`;
  if (strategy.kind === "all") return `all at once · ${bake}`;
  if (strategy.kind === "canary") return `canary ${strategy.canary}, then the rest · ${bake}`;
  return `waves ${strategy.waves.join(" → ")} → rest · ${bake}`;
}

/** A list of registry events, newest first, with links to their device and deployment. */
export function eventList(events, now, emptyText = "no events yet", {deployment = true, device = true} = {}) {
  if (!events.length) return h("p", {className: "muted events-empty"}, emptyText);
  return h("ol", {className: "events"}, events.map((event) =>
    h("li", {className: `event ev-${event.kind.replace(/[^a-z-]/gi, "")}`},
      h("span", {className: "ev-time"}, timeAgo(event.time, now)),
      h("span", {className: "ev-kind"}, event.kind),
      h("span", {className: "ev-message"}, event.message),
      h("span", {className: "ev-links"},
        device && event.device_id ? h("a", {href: `#/devices/${encodeURIComponent(event.device_id)}`}, event.device_id) : null,
        deployment && event.deployment ? h("a", {href: `#/deployments/${encodeURIComponent(event.deployment)}`}, event.deployment) : null))));
}
