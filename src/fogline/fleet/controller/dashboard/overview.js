// The fleet at a glance: device counts, versions per release, fleet charts, deployments, events.

import {api} from "./api.js";
import {NO_DATA, bars, lineChart, progress} from "./charts.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {compareVersions, number} from "./format.js";
import {
  DEPLOY_STATUSES, MOVING, NO_WORKLOAD, chartRange, eventList, problem, rangeSelect, releaseNames,
  runsOnlyModels, versionColours, waves,
} from "./fleet.js";
import {releaseMonitoringCharts} from "./monitoring.js";

export function overviewPage(_params, refresh) {
  const cards = h("section", {className: "cards", id: "counts"});
  const versions = h("div", {id: "versions"});
  const charts = h("div", {className: "chart-grid", id: "fleet-charts"});
  const health = h("div", {className: "chart-grid", id: "release-health"});
  const running = h("div", {id: "running"});
  const events = h("div", {id: "recent-events"});
  const el = h("div", {className: "page overview"},
    h("h1", null, "Fleet overview"),
    cards,
    h("div", {className: "columns"},
      h("section", {className: "panel"}, h("h2", null, "Versions in the fleet"), versions),
      h("section", {className: "panel"}, h("h2", null, "Running deployments"), running)),
    h("section", {className: "panel"},
      h("div", {className: "panel-head"}, h("h2", null, "Fleet over time"), rangeSelect(refresh)),
      charts),
    h("section", {className: "panel"}, h("h2", null, "Model health by release"), health),
    h("section", {className: "panel"}, h("h2", null, "Recent events"), events));

  async function update(now) {
    const range = chartRange();
    const step = Math.max(10, Math.round(range / 120));
    const [devices, deployments, series, recent, releases, monitored] = await Promise.all([
      api("api/devices"),
      api("api/deployments?status=running"),
      api(`api/series?since=${now - range}&step=${step}`),
      api("api/events?limit=12"),
      api("api/releases"),
      api(`api/monitoring/series?since=${now - range}&step=${step}`),
    ]);
    replace(cards, ...countCards(devices, deployments));
    replace(versions, versionBars(devices));
    replace(running, runningList(deployments));
    replace(charts, ...fleetCharts(series, [now - range, now], runsOnlyModels(devices, releases)));
    replace(health, ...releaseMonitoringCharts(monitored, [now - range, now]));
    replace(events, eventList(recent, now,
      "no events yet: enrolments, deployments, rollbacks and drift alarms appear here"));
  }

  return {title: "Overview", el, update};
}

function card(label, value, className, href) {
  return h("a", {className: `card ${className}`, href, dataset: {count: label}},
    h("span", {className: "card-value"}, String(value)), h("span", {className: "card-label"}, label));
}

function countCards(devices, deployments) {
  const on = devices.filter((d) => d.online).length;
  const failing = devices.filter((d) => problem(d) !== null).length;
  return [
    card("devices", devices.length, "neutral", "#/devices"),
    card("online", on, on ? "good" : "neutral", "#/devices"),
    card("offline", devices.length - on, devices.length - on ? "idle" : "neutral", "#/devices"),
    card("failed", failing, failing ? "bad" : "neutral", "#/devices"),
    card("rolling out", deployments.length, deployments.length ? "busy" : "neutral", "#/deployments"),
  ];
}

function versionBars(devices) {
  if (!devices.length) {
    return empty("No devices yet.", "Start an agent: ",
      code("fogline agent --broker URL --controller URL --data DIR --device-id ID"),
      " (enrol it with a token from ", code("fogline fleet token"), ").");
  }
  const names = releaseNames(devices);
  if (!names.length) {
    return empty("No device runs a release yet.", "Publish one with ", code("fogline release create"),
      " and roll it out with ", code("fogline fleet deploy NAME VERSION --group GROUP"), ".");
  }
  return h("div", {className: "release-versions"}, names.map((name) => {
    const counts = new Map();
    let moving = 0;
    for (const device of devices) {
      const status = device.state?.releases?.[name];
      if (!status) continue;
      const version = status.version ?? "none";
      counts.set(version, (counts.get(version) ?? 0) + 1);
      if (MOVING.has(status.phase)) moving += 1;
    }
    const colours = versionColours([...counts.keys()]);
    const items = [...counts.entries()]
      .sort((a, b) => compareVersions(b[0], a[0]))
      .map(([version, count]) => ({label: version, value: count, className: `c${colours.get(version)}`,
        text: `${count} of ${devices.length}`}));
    return h("div", {className: "release-block", dataset: {release: name}},
      h("h3", null, name, moving ? h("span", {className: "muted"}, ` · ${moving} updating`) : null),
      bars(items, devices.length));
  }));
}

function runningList(deployments) {
  if (!deployments.length) {
    return empty("Nothing is rolling out.", "Start a rollout with ",
      code("fogline fleet deploy NAME VERSION --group GROUP"), ".");
  }
  return h("ul", {className: "mini-deployments"}, deployments.map((d) => {
    const counts = DEPLOY_STATUSES.map((status) => ({status, count: d.counts[status] ?? 0}));
    const total = d.devices.length;
    return h("li", null,
      h("a", {href: `#/deployments/${encodeURIComponent(d.id)}`}, `${d.release} ${d.version}`),
      h("span", {className: "muted"}, ` → ${d.group} · wave ${d.wave + 1} of ${d.waves} `),
      badge(d.status),
      progress(counts, total),
      h("span", {className: "muted small"}, `${d.counts.converged ?? 0} of ${total} converged · ${waves(d).length} waves`));
  }));
}

function fleetCharts(series, range, noWorkload) {
  const workload = noWorkload ? NO_WORKLOAD : NO_DATA;
  const at = (values, map = (v) => v) => series.time.map((t, i) => [t, values[i] === null ? null : map(values[i])]);
  // A model release reports empty heartbeats: flat zeros would read as a stalled workload.
  const work = (values, map) => (noWorkload ? [] : at(values, map));
  return [
    lineChart({title: "Throughput", unit: "items/s", id: "throughput", range, emptyText: workload,
      series: [{name: "items/s", points: work(series.items_per_second)}]}),
    lineChart({title: "Worst p99 latency", unit: "ms", id: "p99", range, emptyText: workload,
      series: [{name: "p99 ms", points: work(series.p99_ms), color: 1}]}),
    lineChart({title: "Error rate", unit: "%", id: "errors", range, format: (v) => `${number(v)}%`,
      emptyText: workload, series: [{name: "errors", points: work(series.error_rate, (v) => v * 100), color: 3}]}),
    lineChart({title: "Devices reporting", unit: "devices", id: "reporting", range,
      series: [{name: "devices", points: at(series.devices), color: 2}]}),
  ];
}

