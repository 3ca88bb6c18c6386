// The devices table (filter by group or id) and one device's page.

import {ApiError, api} from "./api.js";
import {NO_DATA, lineChart} from "./charts.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {number, timeAgo} from "./format.js";
import {NO_MONITORING, deviceMonitoringCharts, monitoringFacts} from "./monitoring.js";
import {
  NO_WORKLOAD, chartRange, eventList, lastError, online, problem, rangeSelect, releaseCell, releaseNames,
  runsOnlyModels,
} from "./fleet.js";

const AGENT_HINT = "fogline agent --broker URL --controller URL --data DIR --device-id ID";
const MAX_ROWS = 300;  // a big fleet is found by filtering; thousands of rows every 3 s would crawl
const MAX_EVENTS = 20;
const NO_USAGE = "no workload: CPU and memory are recorded with a pipeline's or server's telemetry";

export function devicesPage(params) {
  const group = params.get("group") ?? "";
  let search = params.get("q") ?? "";
  let last = null;
  const groupSelect = h("select", {id: "group-filter", "aria-label": "group",
    onchange: () => {
      const query = new URLSearchParams();
      if (groupSelect.value) query.set("group", groupSelect.value);
      window.location.hash = `#/devices${query.size ? `?${query}` : ""}`;
    }});
  const searchBox = h("input", {type: "search", id: "device-search", placeholder: "filter by id or tag",
    value: search, oninput: () => {
      search = searchBox.value.trim();
      if (last) render(...last);
    }});
  const summary = h("span", {className: "muted", id: "device-count"});
  const table = h("div", {className: "table-wrap", id: "devices"});
  const el = h("div", {className: "page devices"},
    h("div", {className: "page-head"}, h("h1", null, "Devices"),
      h("div", {className: "toolbar"}, h("label", null, "group ", groupSelect), searchBox, summary)),
    table);

  function render(devices, now) {
    const groups = [...new Set(devices.map((d) => d.group))].sort();
    replace(groupSelect, h("option", {value: ""}, `all groups (${devices.length})`),
      ...groups.map((g) => h("option", {value: g},
        `${g} (${devices.filter((d) => d.group === g).length})`)));
    groupSelect.value = groups.includes(group) ? group : "";
    if (group && !groups.includes(group)) {
      groupSelect.append(h("option", {value: group}, `${group} (0)`));
      groupSelect.value = group;
    }
    const needle = search.toLowerCase();
    const shown = devices.filter((d) => (!group || d.group === group)
      && (!needle || d.id.toLowerCase().includes(needle) || d.tags.some((t) => t.toLowerCase().includes(needle))));
    summary.textContent = `${shown.length} of ${devices.length} devices`;
    const rows = shown.slice(0, MAX_ROWS);
    if (!devices.length) {
      replace(table, empty("No devices yet.", "Start an agent with ", code(AGENT_HINT),
        "; enrol it first with a one-time token from ", code("fogline fleet token --group GROUP"), "."));
      return;
    }
    if (!shown.length) {
      replace(table, empty(`No device matches${group ? ` in group ${group}` : ""}.`,
        h("a", {href: "#/devices"}, "Show all devices")));
      return;
    }
    const releases = releaseNames(rows);
    replace(table, h("table", {className: "grid-table"},
      h("thead", null, h("tr", null,
        h("th", null, "Device"), h("th", null, "Group"), h("th", null, "Online"), h("th", null, "Last seen"),
        releases.map((name) => h("th", {className: "release-col"}, name)),
        h("th", null, "Health"), h("th", null, "Last error"))),
      h("tbody", null, rows.map((device) => {
        const trouble = problem(device);
        const href = `#/devices/${encodeURIComponent(device.id)}`;
        return h("tr", {className: trouble ? "row-bad" : "", dataset: {device: device.id},
          onclick: (event) => {
            if (event.target.closest("a") === null) window.location.hash = href;
          }},
        h("td", null, h("a", {className: "device-link", href}, device.id),
          device.tags.length ? h("span", {className: "tags"}, device.tags.map((t) => h("span", {className: "tag"}, t))) : null),
        h("td", null, device.group),
        h("td", null, online(device)),
        h("td", null, timeAgo(device.last_seen, now)),
        releases.map((name) => h("td", {dataset: {release: name}}, releaseCell(device.state?.releases?.[name]))),
        h("td", null, device.state ? badge(trouble && device.state.health === "ok" ? "degraded" : device.state.health)
          : h("span", {className: "muted"}, "no report")),
        h("td", {className: "error-cell"}, lastError(device) ?? h("span", {className: "muted"}, "—")));
      }))),
    rows.length < shown.length ? h("p", {className: "muted more"},
      `Showing the first ${rows.length} of ${shown.length}; filter by group or id to see the others.`) : null);
  }

  async function update(now) {
    const devices = await api("api/devices");
    last = [devices, now];
    render(devices, now);
  }

  return {title: "Devices", el, update};
}

export function devicePage(params, refresh) {
  const id = params.get("id");
  const head = h("div", {id: "device-head"});
  const states = h("div", {id: "desired-reported"});
  const charts = h("div", {className: "chart-grid", id: "device-charts"});
  const health = h("div", {id: "device-monitoring"});
  const events = h("div", {id: "device-events"});
  const el = h("div", {className: "page device"},
    h("nav", {className: "crumbs"}, h("a", {href: "#/devices"}, "Devices"), " / ", h("span", null, id)),
    head,
    h("section", {className: "panel"}, h("h2", null, "Desired and reported state"), states),
    h("section", {className: "panel"},
      h("div", {className: "panel-head"}, h("h2", null, "Telemetry"), rangeSelect(refresh)), charts),
    h("section", {className: "panel"}, h("h2", null, "Model health"), health),
    h("section", {className: "panel"}, h("h2", null, "Events"), events));

  async function update(now) {
    const range = chartRange();
    let device;
    let recent;
    let releases;
    try {
      [device, recent, releases] = await Promise.all([
        api(`api/devices/${encodeURIComponent(id)}?since=${now - range}`),
        api(`api/events?device=${encodeURIComponent(id)}&limit=${MAX_EVENTS}`),
        api("api/releases"),
      ]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(el, empty(`No device ${id}.`, "It has not reported or enrolled yet. ",
          h("a", {href: "#/devices"}, "Back to the devices")));
        return;
      }
      throw err;
    }
    replace(head, deviceHead(device, now));
    replace(states, desiredTable(device, now));
    replace(charts, ...deviceCharts(device.metrics, [now - range, now], runsOnlyModels([device], releases)));
    const monitored = device.monitoring ?? [];
    if (!monitored.length) {
      replace(health, h("p", {className: "muted monitoring-empty"}, `${NO_MONITORING} (in this period).`));
    } else {
      replace(health, monitoringFacts(monitored),
        h("div", {className: "chart-grid", id: "device-monitoring-charts"},
          ...deviceMonitoringCharts(monitored, [now - range, now])));
    }
    replace(events, eventList(recent, now, "no events for this device yet", {device: false}));
  }

  return {title: id, el, update};
}

function fact(label, ...value) {
  return h("div", {className: "fact"}, h("dt", null, label), h("dd", null, ...value));
}

function deviceHead(device, now) {
  const state = device.state;
  const trouble = problem(device);
  const applied = state?.generation ?? 0;
  const wanted = device.desired.generation;
  return h("div", {className: "device-head"},
    h("h1", null, device.id, " ", online(device), " ",
      state ? badge(trouble && state.health === "ok" ? "degraded" : state.health) : badge("unknown")),
    trouble ? h("p", {className: "callout bad"}, trouble) : null,
    h("dl", {className: "facts"},
      fact("group", device.group),
      fact("tags", device.tags.length ? device.tags.join(", ") : "—"),
      fact("last seen", timeAgo(device.last_seen, now)),
      fact("enrolled", device.enrolled_at ? timeAgo(device.enrolled_at, now) : "never (it joined by reporting)"),
      fact("agent", state?.agent || "—"),
      fact("desired state", applied >= wanted ? `applied (generation ${wanted})`
        : h("span", {className: "warn-text"}, `generation ${applied} applied, ${wanted} wanted`))));
}

function desiredTable(device, now) {
  const reported = device.state?.releases ?? {};
  const desired = device.desired.releases ?? {};
  const names = [...new Set([...Object.keys(desired), ...Object.keys(reported)])].sort();
  if (!names.length) {
    return empty("Nothing desired or reported yet.", "Roll a release out to its group with ",
      code(`fogline fleet deploy NAME VERSION --group ${device.group}`), ".");
  }
  return h("table", {className: "grid-table"},
    h("thead", null, h("tr", null, ["Release", "Desired", "Running", "Phase", "Since", "Error"].map((t) => h("th", null, t)))),
    h("tbody", null, names.map((name) => {
      const want = desired[name] ?? null;
      const have = reported[name];
      const drift = want !== null && want !== (have?.version ?? null);  // not there yet
      return h("tr", {className: drift ? "row-drift" : "", dataset: {release: name}},
        h("td", null, name),
        h("td", null, want ? code(want) : h("span", {className: "muted"}, "none set"),
          device.desired.rollback?.[name] ? h("span", {className: "muted"}, " (rollback allowed)") : null),
        h("td", null, releaseCell(have, {phase: false})),
        h("td", null, have ? badge(have.phase) : "—"),
        h("td", null, have ? timeAgo(have.since, now) : "—"),
        h("td", {className: "error-cell"}, have?.error ?? h("span", {className: "muted"}, "—")));
    })));
}

function deviceCharts(rows, range, noWorkload) {
  const workload = noWorkload ? NO_WORKLOAD : NO_DATA;
  const usage = noWorkload ? NO_USAGE : NO_DATA;
  const releases = [...new Set(rows.map((r) => r.release))].sort();
  // A model release reports empty heartbeats: flat zeros would read as a stalled workload.
  const per = (pick, extra = {}) => (noWorkload ? [] : releases).map((release, index) => ({
    name: releases.length > 1 ? `${release}${extra.suffix ?? ""}` : `${extra.label ?? release}`,
    color: index, dashed: extra.dashed,
    points: rows.filter((r) => r.release === release).map((r) => [r.time, pick(r)]),
  }));
  const once = new Map();  // cpu and memory come once per report, repeated on each release's row
  for (const row of rows) once.set(row.time, row);
  const reports = [...once.values()];
  return [
    lineChart({title: "Throughput", unit: "items/s", id: "throughput", range, emptyText: workload,
      series: per((r) => r.items_per_second)}),
    lineChart({title: "Latency", unit: "ms", id: "latency", range, emptyText: workload,
      series: [...per((r) => r.p99_ms, {suffix: " p99", label: "p99"}),
        ...per((r) => r.p50_ms, {suffix: " p50", label: "p50", dashed: true})]}),
    lineChart({title: "Error rate", unit: "%", id: "errors", range, format: (v) => `${number(v)}%`,
      emptyText: workload, series: per((r) => (r.items ? (100 * r.errors) / r.items : 0))}),
    lineChart({title: "CPU", unit: "%", id: "cpu", range, format: (v) => `${number(v)}%`, emptyText: usage,
      series: [{name: "cpu", color: 4, points: reports.map((r) => [r.time, r.cpu_percent])}]}),
    lineChart({title: "Memory", unit: "MB", id: "memory", range, emptyText: usage,
      series: [{name: "memory", color: 5, points: reports.map((r) => [r.time, r.memory_mb])}]}),
  ];
}

