// A model's health as devices report it: drift scores and alarms, live accuracy from late
// labels (and its estimate, always marked as one), labels and captures — per device, per
// release, and the accuracy figures a rollout's gate used.

import {lineChart} from "./charts.js";
import {h} from "./dom.js";
import {number} from "./format.js";

/** What an empty model-health chart says: where the figures come from. */
export const NO_MONITORING = "nothing reported: a pipeline release reports this once it has a drift "
  + "stage, a labels: section, a capture: section or model variants";
const ESTIMATE_NOTE = "Dashed lines are estimates from the model's calibrated confidence, not "
  + "measured accuracy; they stand in where no labels have arrived.";

/** An accuracy (0..1) as a percentage: 0.931 → "93.1%". */
export const accuracyText = (v) => (v === null || v === undefined ? "—" : `${number(v * 100)}%`);
const percentAxis = (v) => `${number(v)}%`;
/** Chart colours but red (c3), which marks alarms. */
const hue = (index) => [0, 1, 2, 4, 5, 6, 7][index % 7];

function byKey(rows, key) {
  const groups = new Map();
  for (const row of rows) {
    const name = key(row);
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(row);
  }
  return [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Per report time, the row with the most labelled items (the largest window that has them). */
function bestPerReport(rows) {
  const best = new Map();
  for (const row of rows) {
    const seen = best.get(row.time);
    const size = Number(row.window) || 0;
    if (!seen || (row.count ?? 0) > (seen.count ?? 0)
      || ((row.count ?? 0) === (seen.count ?? 0) && size > (Number(seen.window) || 0))) best.set(row.time, row);
  }
  return [...best.values()].sort((a, b) => a.time - b.time);
}

/** The latest live figure (most labelled) and estimate (largest window) of some device rows. */
export function latestFigures(rows) {
  const live = rows.filter((r) => r.kind === "live" && (r.metric || "accuracy") === "accuracy");
  const estimates = rows.filter((r) => r.kind === "estimate");
  const lastLive = live.length ? bestPerReport(live).at(-1) : null;
  const lastTime = estimates.length ? Math.max(...estimates.map((r) => r.time)) : null;
  const lastEstimate = estimates.filter((r) => r.time === lastTime)
    .sort((a, b) => (Number(a.window) || 0) - (Number(b.window) || 0)).at(-1) ?? null;
  return {live: lastLive, estimate: lastEstimate};
}

function fact(name, label, ...value) {
  return h("div", {className: "fact", dataset: {fact: name}}, h("dt", null, label), h("dd", null, ...value));
}

/** The model-health facts of one device: live accuracy, estimate, alarms, captures in the period. */
export function monitoringFacts(rows) {
  const {live, estimate} = latestFigures(rows);
  const alarms = rows.filter((r) => r.kind === "drift").reduce((n, r) => n + (r.count ?? 0), 0);
  const up = rows.some((r) => r.kind === "drift" && r.alarm && r.time === Math.max(
    ...rows.filter((x) => x.kind === "drift").map((x) => x.time)));
  const captured = rows.filter((r) => r.kind === "captures" && r.key === "stored")
    .reduce((n, r) => n + (r.count ?? 0), 0);
  const variants = variantFact(rows);
  return h("dl", {className: "facts monitoring-facts"},
    fact("live", "live accuracy", live ? accuracyText(live.value) : "—",
      live ? h("span", {className: "muted"}, ` over ${live.count} labelled${live.key ? ` · v${live.key}` : ""}`)
        : h("span", {className: "muted"}, " no labels yet")),
    fact("estimate", "estimate", estimate ? accuracyText(estimate.value) : "—",
      estimate ? h("span", {className: "estimate-mark"}, " estimate, not measured") : null),
    fact("alarms", "drift alarms", String(alarms),
      up ? h("span", {className: "warn-text"}, " · alarm up now") : null),
    fact("captures", "captured", String(captured)),
    variants);
}

/** Model variants switched by load: the one running at the latest report, items each served. */
function variantFact(rows) {
  const mine = rows.filter((r) => r.kind === "variant");
  if (!mine.length) return null;
  const last = Math.max(...mine.map((r) => r.time));
  const active = mine.find((r) => r.time === last && r.alarm);
  const served = byKey(mine, (r) => r.key)
    .map(([name, of]) => `${name} ${number(of.reduce((n, r) => n + (r.count ?? 0), 0))}`);
  const switches = rows.filter((r) => r.kind === "switches").reduce((n, r) => n + (r.count ?? 0), 0);
  return fact("variants", "model variant", active ? `${active.key} now` : "—",
    h("span", {className: "muted"},
      ` · items served ${served.join(", ")} · ${switches} switch${switches === 1 ? "" : "es"}`));
}

/** Charts of one device's monitoring rows over `range`: drift, accuracy, labels and captures. */
export function deviceMonitoringCharts(rows, range) {
  const drift = rows.filter((r) => r.kind === "drift");
  const releases = new Set(rows.map((r) => r.release));
  const named = (release, rest) => (releases.size > 1 ? `${release} ${rest}` : rest);
  const driftSeries = byKey(drift, (r) => `${r.release}\u0000${r.key}`).map(([, group], index) => ({
    name: named(group[0].release, `${group[0].key}${group[0].detector ? ` (${group[0].detector})` : ""}`),
    color: hue(index), points: group.map((r) => [r.time, r.value]),
  }));
  const alarms = drift.filter((r) => (r.count ?? 0) > 0);
  if (alarms.length) {
    driftSeries.push({name: "alarm raised", color: 3, dots: true,
      points: alarms.map((r) => [r.time, r.value ?? 0])});
  }
  const live = rows.filter((r) => r.kind === "live" && (r.metric || "accuracy") === "accuracy");
  const estimates = rows.filter((r) => r.kind === "estimate");
  const models = [...new Set([...live, ...estimates].map((r) => `${r.release}\u0000${r.key}`))].sort();
  const tone = (group) => hue(models.indexOf(`${group[0].release}\u0000${group[0].key}`));
  const accuracy = [
    ...byKey(live, (r) => `${r.release}\u0000${r.key}`).map(([, group]) => ({
      name: named(group[0].release, `live${group[0].key ? ` v${group[0].key}` : ""}`), color: tone(group),
      points: bestPerReport(group).map((r) => [r.time, 100 * r.value]),
    })),
    ...byKey(estimates, (r) => `${r.release}\u0000${r.key}`).map(([, group]) => ({
      name: named(group[0].release, `estimate${group[0].key ? ` v${group[0].key}` : ""} (not measured)`),
      color: tone(group), dashed: true,
      points: byKey(group, (r) => r.time).map(([, at]) => [at[0].time,
        100 * at.sort((a, b) => (Number(a.window) || 0) - (Number(b.window) || 0)).at(-1).value]),
    })),
  ];
  const counts = (kind, key, name, color) => {
    const picked = rows.filter((r) => r.kind === kind && r.key === key);
    return picked.length ? [{name, color, points: byKey(picked, (r) => r.time)
      .map(([, at]) => [at[0].time, at.reduce((n, r) => n + (r.count ?? 0), 0)])}] : [];
  };
  const accuracyChart = lineChart({title: "Accuracy", unit: "%", id: "accuracy", range,
    format: percentAxis, emptyText: NO_MONITORING, series: accuracy});
  if (estimates.length) accuracyChart.append(h("p", {className: "chart-note estimate-note"}, ESTIMATE_NOTE));
  return [
    lineChart({title: "Drift score", unit: "score", id: "drift", range, emptyText: NO_MONITORING,
      series: driftSeries}),
    accuracyChart,
    lineChart({title: "Labels and captures", unit: "per report", id: "captures", range,
      emptyText: NO_MONITORING, series: [...counts("labels", "joined", "labels joined", 2),
        ...counts("captures", "stored", "captured", 4), ...counts("captures", "capped", "capped", 6)]}),
  ];
}

/** Charts per release version from `api/monitoring/series`: worst drift, accuracy, captures. */
export function releaseMonitoringCharts(series, range) {
  const names = Object.keys(series).sort();
  const colour = (name) => hue(names.indexOf(name));  // one colour per release version, in every chart
  const at = (s, key, map = (v) => v) => s.time.map((t, i) => [t, s[key][i] === null ? null : map(s[key][i])]);
  const alarmed = names.flatMap((name) => series[name].time
    .map((t, i) => [t, series[name].alarms[i] ? series[name].drift_score[i] ?? 0 : null])
    .filter(([, v]) => v !== null));
  const accuracy = [
    ...names.filter((name) => series[name].live_accuracy.some((v) => v !== null)).map((name) => ({
      name: `${name} live`, color: colour(name), points: at(series[name], "live_accuracy", (v) => 100 * v)})),
    ...names.filter((name) => series[name].estimate.some((v) => v !== null)).map((name) => ({
      name: `${name} estimate (not measured)`, color: colour(name), dashed: true,
      points: at(series[name], "estimate", (v) => 100 * v)})),
  ];
  const accuracyChart = lineChart({title: "Accuracy by release", unit: "%", id: "release-accuracy", range,
    format: percentAxis, emptyText: NO_MONITORING, series: accuracy});
  if (accuracy.some((s) => s.dashed)) accuracyChart.append(h("p", {className: "chart-note estimate-note"}, ESTIMATE_NOTE));
  const drift = names.filter((name) => series[name].drift_score.some((v) => v !== null))
    .map((name) => ({name, color: colour(name), points: at(series[name], "drift_score")}));
  if (alarmed.length) drift.push({name: "alarm raised", color: 3, dots: true, points: alarmed});
  return [
    lineChart({title: "Worst drift score by release", unit: "score", id: "release-drift", range,
      emptyText: NO_MONITORING, series: drift}),
    accuracyChart,
    lineChart({title: "Captures by release", unit: "items", id: "release-captures", range,
      emptyText: NO_MONITORING, series: names.filter((name) => series[name].captures.some((v) => v))
        .map((name) => ({name, color: colour(name), points: at(series[name], "captures")}))}),
  ];
}

/** What a deployment's model gates stand on: the accuracy figure each device is judged on. */
export function gateNote(gates) {
  if (!gates) return null;
  const lines = [];
  for (const figure of gates.accuracy?.used ?? []) {
    lines.push(h("li", {className: `gate-figure source-${figure.source}`, dataset: {source: figure.source}},
      figure.text));
  }
  for (const text of gates.accuracy?.waiting ?? []) lines.push(h("li", {className: "gate-waiting"}, `waiting for ${text}`));
  if (gates.drift) {
    lines.push(h("li", {className: gates.drift.alarm ? "gate-drift bad" : "gate-drift"},
      gates.drift.alarm ?? "no drift alarm on the new version so far"));
  }
  if (!lines.length) return null;
  return h("div", {className: "gates"}, h("strong", null, "Model gates: "), h("ul", null, lines));
}
