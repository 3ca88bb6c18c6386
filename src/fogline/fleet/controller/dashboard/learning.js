// Federated learning: the runs the controller coordinates (`fogline fl start`), and what the
// list and a run's page (learning-run.js) share.

import {ApiError, api} from "./api.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {number, timeAgo} from "./format.js";

const START_HINT = "fogline fl start --task fogline.examples:digits_task --release NAME --group G";
/** A run in one of these statuses may still change; the others are over for good. */
export const ACTIVE = new Set(["running", "stopping", "finishing"]);
const FILTERS = [["", "all"], ["active", "active"], ["ended", "ended"]];
const MAX_RUNS = 100;

/** Each run's page as last fetched: an ended run's never changes, so it is fetched once. */
const fetched = new Map();

/** An accuracy (0..1) as a percentage with one decimal where it matters: 0.923 → "92.3%". */
export const accuracy = (value) => (value === null || value === undefined ? "—" : `${number(value * 100)}%`);

/** A difference of accuracies in percentage points: 0.01 → "1 point". */
export function points(value) {
  const text = number(value * 100);
  return `${text} point${text === "1" ? "" : "s"}`;
}

/** The last round's `key` that is not null (accuracy, ε…), or null. */
export function last(rounds, key) {
  for (let i = rounds.length - 1; i >= 0; i -= 1) {
    const value = rounds[i][key];
    if (value !== null && value !== undefined) return value;
  }
  return null;
}

/** Rounds that measured something: closed, or failed and kept the model. */
export const measured = (run) => (run.rounds ?? []).filter((r) => r.status !== "open");

/** A table head; a label in `numeric` is right-aligned over its numbers, "ε" keeps its case. */
export function tableHead(labels, numeric = []) {
  return h("thead", null, h("tr", null, labels.map((label) => h("th", {
    className: [numeric.includes(label) ? "num" : "", label === "ε" ? "greek" : ""].join(" ").trim() || null,
  }, label))));
}

/** A duration: 0.004 → "4 ms", 12.5 → "12.5 s". */
export const seconds = (value) => (value < 1 ? `${number(value * 1000)} ms` : `${number(value)} s`);

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** GET a run's page (its rounds and current round), remembered for the list. */
export async function fetchRun(id) {
  const found = await api(`api/fl/runs/${encodeURIComponent(id)}`);
  fetched.set(id, found);
  return found;
}

function noRuns() {
  return empty("No federated runs yet.", "Start one with ", code(START_HINT),
    "; the group's devices train through a learner release that names the same task.");
}

function noLearning(err) {
  return empty("Federated learning is not available on this controller.",
    `GET /api/fl/runs answered ${err.status}: ${err.message}.`);
}

// -- the list ----------------------------------------------------------------------------------

export function learningPage(params) {
  const filter = params.get("status") ?? "";
  const list = h("div", {id: "runs"});
  const el = h("div", {className: "page learning"},
    h("div", {className: "page-head"}, h("h1", null, "Learning"),
      h("nav", {className: "tabs"}, FILTERS.map(([value, label]) =>
        h("a", {href: value ? `#/learning?status=${value}` : "#/learning",
          className: value === filter ? "active" : ""}, label)))),
    list);

  async function detail(run) {
    const known = fetched.get(run.id);
    if (known && !ACTIVE.has(run.status) && known.status === run.status && known.updated === run.updated) {
      return known;
    }
    try {
      return await fetchRun(run.id);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;  // gone since the list
      throw err;
    }
  }

  async function update(now) {
    let runs;
    try {
      runs = await api("api/fl/runs");
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(list, noLearning(err));
        return;
      }
      throw err;
    }
    if (!runs.length) {
      replace(list, noRuns());
      return;
    }
    const wanted = runs.filter((r) => !filter || (filter === "active") === ACTIVE.has(r.status));
    const shown = wanted.reverse().slice(0, MAX_RUNS);  // the newest first
    if (!shown.length) {
      replace(list, empty(`No ${filter} run.`, h("a", {href: "#/learning"}, "Show all runs")));
      return;
    }
    const details = await Promise.all(shown.map(detail));
    replace(list, h("div", {className: "table-wrap"}, h("table", {className: "grid-table"},
      tableHead(["Run", "Release", "Task", "Status", "Round", "Strategy", "Accuracy", "ε", "Group", "Started"]),
      h("tbody", null, shown.map((run, i) => runRow(details[i] ?? run, now))))),
    wanted.length > shown.length ? h("p", {className: "muted more"},
      `Showing the newest ${shown.length} of ${wanted.length} runs.`) : null);
  }

  return {title: "Learning", el, update};
}

function runRow(run, now) {
  const href = `#/learning/${encodeURIComponent(run.id)}`;
  const rounds = measured(run);
  const epsilon = last(rounds, "epsilon");
  const note = run.waiting ?? run.reason;
  return h("tr", {dataset: {run: run.id}, onclick: (event) => {
    if (event.target.closest("a") === null) window.location.hash = href;
  }},
  h("td", null, h("a", {className: "run-link", href}, run.id)),
  h("td", null, h("strong", null, run.spec.release),
    run.result?.version ? [" ", code(run.result.version)] : null),
  h("td", null, code(run.spec.task)),
  h("td", {className: "run-status"}, badge(run.status),
    note ? h("div", {className: "muted small note", title: note}, note) : null),
  h("td", {className: "run-round"}, `${run.round} / ${run.spec.rounds}`),
  h("td", null, run.spec.strategy, run.spec.dp_noise !== null ? h("span", {className: "tag"}, "DP") : null),
  h("td", {className: "run-accuracy"}, accuracy(last(rounds, "accuracy"))),
  h("td", {className: "run-epsilon"}, epsilon === null ? h("span", {className: "muted"}, "—")
    : [number(epsilon), run.spec.epsilon_budget !== null
      ? h("span", {className: "muted"}, ` of ${number(run.spec.epsilon_budget)}`) : null]),
  h("td", null, run.spec.group),
  h("td", null, timeAgo(run.created, now)));
}
