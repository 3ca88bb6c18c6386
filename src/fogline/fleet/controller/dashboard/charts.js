// Charts drawn as inline SVG: line charts over time (or per round), with axes, ticks, labels
// and a legend.

import {h, s} from "./dom.js";
import {number, when} from "./format.js";

const W = 640;
const H = 210;
const M = {top: 12, right: 16, bottom: 30, left: 52};
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const MAX_MARKERS = 90;

/** What an empty chart says when its caller knows no better reason. */
export const NO_DATA = "no data in this period";

/** Round steps of 1, 2 or 5 × 10^k so that about `count` of them span `max`. */
export function niceTicks(max, count = 4) {
  const top = max > 0 ? max : 1;
  const raw = top / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((v) => v >= raw) ?? raw;
  const ticks = [];
  for (let v = 0; v <= top + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < top) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function timeTicks(t0, t1) {
  const step = TIME_STEPS.find((v) => (t1 - t0) / v <= 6) ?? 86400;
  const ticks = [];
  const offset = new Date(t0 * 1000).getTimezoneOffset() * 60;  // ticks on local round times
  for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) ticks.push(t);
  return {ticks, step};
}

function timeLabel(t, step) {
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  if (step >= 86400) return `${d.getMonth() + 1}/${d.getDate()}`;
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return step < 60 ? `${hm}:${pad(d.getSeconds())}` : hm;
}

/** The x axis of a chart over time: ticks on whole local minutes or hours, tooltips with the date. */
export const TIME_AXIS = {
  ticks(t0, t1) {
    const {ticks, step} = timeTicks(t0, t1);
    return ticks.map((t) => [t, timeLabel(t, step)]);
  },
  at: (t) => `at ${when(t)}`,
  aria: "over time",
};

const ROUND_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000];

/** The x axis of a chart per federated round: whole rounds, about eight ticks at most. */
export const ROUND_AXIS = {
  ticks(t0, t1) {
    const first = Math.max(1, Math.ceil(t0));
    const last = Math.floor(t1);
    const step = ROUND_STEPS.find((v) => (last - first) / v < 8) ?? 100000;
    const ticks = [];
    for (let r = first; r <= last; r += 1) {
      if (step === 1 || r % step === 0) ticks.push([r, String(r)]);
    }
    return ticks;
  },
  at: (round) => `in round ${round}`,
  aria: "per round",
};

/** Split points into runs wherever a value is missing or a gap is much longer than usual. */
function runs(points) {
  const gaps = [];
  for (let i = 1; i < points.length; i += 1) gaps.push(points[i][0] - points[i - 1][0]);
  const usual = gaps.length ? [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] : 0;
  const out = [];
  let run = [];
  let last = null;
  for (const [t, v] of points) {
    const broken = v === null || v === undefined || Number.isNaN(v);
    if (broken || (last !== null && usual > 0 && t - last > usual * 3)) {
      if (run.length) out.push(run);
      run = [];
    }
    if (!broken) {
      run.push([t, v]);
      last = t;
    }
  }
  if (run.length) out.push(run);
  return out;
}

/**
 * A line chart over time (or, with axis: ROUND_AXIS, per round).
 *
 * series: [{name, points: [[x, value|null], …], dashed?, dots?}], x in Unix seconds (or rounds);
 * a series with dots: true is drawn as markers only (events such as alarms), never as a line;
 * range: [x0, x1];
 * format(value) labels the y axis and tooltips; unit names the y axis; emptyText says why,
 * in place of the chart, when there is nothing to draw.
 */
export function lineChart({title, unit, series, range, format = number, id, emptyText = NO_DATA,
  axis = TIME_AXIS}) {
  const [t0, t1] = range;
  const values = series.flatMap((line) => line.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const figure = h("figure", {className: "chart", dataset: {chart: id ?? title}});
  figure.append(h("figcaption", null, h("span", {className: "chart-title"}, title),
    series.length > 1 ? legend(series) : null));
  if (!values.length) {
    figure.append(h("div", {className: "chart-empty"}, emptyText));
    return figure;
  }
  const ticks = niceTicks(Math.max(...values));
  const top = ticks[ticks.length - 1];
  const x = (t) => M.left + ((t - t0) / Math.max(1, t1 - t0)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / top) * (H - M.top - M.bottom);
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} ${axis.aria}`});

  const grid = s("g", {class: "grid"});
  for (const v of ticks) {
    grid.append(s("line", {x1: M.left, x2: W - M.right, y1: y(v), y2: y(v)}));
    grid.append(s("text", {x: M.left - 6, y: y(v) + 4, "text-anchor": "end"}, format(v)));
  }
  for (const [t, label] of axis.ticks(t0, t1)) {
    grid.append(s("line", {class: "tick", x1: x(t), x2: x(t), y1: H - M.bottom, y2: H - M.bottom + 4}));
    grid.append(s("text", {x: x(t), y: H - M.bottom + 17, "text-anchor": "middle"}, label));
  }
  grid.append(s("line", {class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom}));
  grid.append(s("line", {class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom}));
  if (unit) {
    grid.append(s("text", {class: "unit", x: 12, y: M.top + (H - M.top - M.bottom) / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${M.top + (H - M.top - M.bottom) / 2})`}, unit));
  }
  svg.append(grid);

  series.forEach((line, index) => {
    const group = s("g", {class: `series c${line.color ?? index % 8}${line.dashed ? " dashed" : ""}`,
      "data-series": line.name});
    const visible = line.points.filter(([t]) => t >= t0 && t <= t1);
    for (const run of line.dots ? [] : runs(visible)) {
      const d = run.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)} ${y(v).toFixed(1)}`).join(" ");
      group.append(s("path", {d}));
    }
    if (visible.length <= MAX_MARKERS || line.dots) {
      for (const [t, v] of visible) {
        if (v === null || v === undefined) continue;
        group.append(s("circle", {cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.6},
          s("title", null, `${line.name}: ${format(v)}${unit ? ` ${unit}` : ""} ${axis.at(t)}`)));
      }
    }
    svg.append(group);
  });
  figure.append(svg);
  return figure;
}

function legend(series) {
  return h("span", {className: "legend"}, series.map((line, index) =>
    h("span", {className: `key c${line.color ?? index % 8}${line.dashed ? " dashed" : ""}`},
      h("i"), line.name)));
}

/** Horizontal bars, one per {label, value, className}, scaled to `total`. */
export function bars(items, total) {
  return h("div", {className: "bars"}, items.map((item) =>
    h("div", {className: "bar-row", dataset: {label: item.label}},
      h("span", {className: "bar-label"}, item.label),
      h("span", {className: "bar-track"},
        h("span", {className: `bar-fill ${item.className ?? ""}`,
          style: {width: `${total ? Math.max(2, (100 * item.value) / total) : 0}%`}})),
      h("span", {className: "bar-value"}, item.text ?? String(item.value)))));
}

/** One bar cut into coloured segments: [{status, count}], with a text legend under it. */
export function progress(segments, total) {
  const bar = h("div", {className: "progress", role: "img",
    "aria-label": segments.map((x) => `${x.count} ${x.status}`).join(", ")});
  for (const {status, count} of segments) {
    if (!count) continue;
    bar.append(h("span", {className: `seg st-${status}`, style: {width: `${(100 * count) / total}%`},
      title: `${count} ${status}`}));
  }
  return bar;
}
