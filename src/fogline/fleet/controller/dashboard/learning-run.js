// One federated run: its settings, why it waits or ended, the gate and the release it signed,
// charts and a table per round, and the devices of its current round with their updates.

import {ApiError} from "./api.js";
import {ROUND_AXIS, lineChart} from "./charts.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {bytes, number, timeAgo} from "./format.js";
import {ACTIVE, accuracy, fetchRun, measured, plural, points, seconds, tableHead} from "./learning.js";

const MAX_ROUNDS = 200;
const SHOWN_AHEAD = 20;  // rounds a chart's axis spans before they happen
const NO_ROUND = "no round has closed yet";

export function runPage(params) {
  const id = params.get("id");
  const head = h("div", {id: "run-head"});
  const result = h("div", {id: "run-result"});
  const charts = h("div", {className: "chart-grid", id: "run-charts"});
  const current = h("div", {id: "current-round"});
  const rounds = h("div", {id: "run-rounds"});
  const el = h("div", {className: "page run"},
    h("nav", {className: "crumbs"}, h("a", {href: "#/learning"}, "Learning"), " / ", h("span", null, id)),
    head,
    h("section", {className: "panel"}, h("h2", null, "Result"), result),
    h("section", {className: "panel"}, h("h2", null, "Per round"), charts),
    h("section", {className: "panel"}, current),
    h("section", {className: "panel"}, h("h2", null, "Rounds"), rounds));
  let run = null;

  async function update(now) {
    if (run === null || ACTIVE.has(run.status)) {  // an ended run never changes: no more requests
      try {
        run = await fetchRun(id);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          replace(el, empty(`No federated run ${id}.`, err.message, ". ",
            h("a", {href: "#/learning"}, "Back to the runs")));
          return;
        }
        throw err;
      }
    }
    replace(head, runHead(run, now));
    replace(result, runResult(run));
    replace(charts, ...roundCharts(run));
    replace(current, currentRound(run, now));
    replace(rounds, roundTable(run, now));
  }

  return {title: id, el, update};
}

function fact(label, ...value) {
  return h("div", {className: "fact"}, h("dt", null, label), h("dd", null, ...value));
}

const REASON = {
  failed: ["bad", "Failed: "],
  "gate-failed": ["bad", "Refused by the gate: "],
  stopping: ["warn", "Stopping: "],
  stopped: ["warn", "Stopped: "],
  finishing: ["info", "Finishing early: "],
  finished: ["info", "Ended early: "],
};

function runHead(run, now) {
  const spec = run.spec;
  const [tone, label] = REASON[run.status] ?? ["info", "Note: "];
  return h("div", {className: "run-head"},
    h("h1", null, spec.release, " ", badge(run.status)),
    h("p", {className: "muted small run-meta"}, code(run.id), " · task ", code(spec.task), ` · group ${spec.group}`,
      " · started ", timeAgo(run.created, now), " · updated ", timeAgo(run.updated, now)),
    run.waiting ? h("p", {className: "callout info waiting", id: "run-waiting"},
      h("strong", null, `Waiting to open round ${run.round + 1}: `), run.waiting, ".") : null,
    run.reason ? h("p", {className: `callout ${tone} reason`, id: "run-reason"}, h("strong", null, label),
      run.reason) : null,
    h("dl", {className: "facts"},
      fact("round", `${run.round} of ${spec.rounds}`),
      fact("strategy", spec.strategy),
      fact("devices a round", `${spec.fraction === 1 ? "all" : `${number(spec.fraction * 100)}% of the`} online, `
        + `at least ${spec.min_clients}`),
      fact("deadline", `${number(spec.deadline)} s a round · ${plural(spec.local_epochs, "local epoch")}`),
      fact("secure aggregation", spec.secagg ? `${spec.secagg_bits}-bit field, clip ${number(spec.secagg_clip)}`
        + (run.current?.stage && run.current.status === "open" ? ` · stage ${run.current.stage}` : "")
        : h("span", {className: "muted"}, "off")),
      fact("differential privacy", spec.dp_noise === null ? h("span", {className: "muted"}, "off")
        : `noise ${number(spec.dp_noise)}, clip ${number(spec.dp_clip)}, δ ${spec.dp_delta.toExponential()}`
          + (spec.epsilon_budget !== null ? `, ε budget ${number(spec.epsilon_budget)}` : "")),
      fact("gate", `at most ${points(spec.max_drop)} below the newest release`
        + (spec.min_accuracy !== null ? `, at least ${accuracy(spec.min_accuracy)}` : "")),
      fact("then", spec.then === "canary" ? `canary, bake ${number(spec.canary_bake)} s`
        + (spec.canary_min_accuracy !== null ? `, rolled back below ${accuracy(spec.canary_min_accuracy)}` : "")
        : "sign the release only")));
}

function runResult(run) {
  const spec = run.spec;
  const gate = run.result?.gate;
  const lines = [];
  if (!gate) {
    const why = run.status === "finishing" ? "Being gated: the model is checked on the validation set now."
      : ACTIVE.has(run.status) ? `Not gated yet: after round ${spec.rounds} the model is checked against the `
        + `newest ${spec.release} release on the validation set of ${spec.task}.`
        : "Not gated: the run ended before the gate.";
    lines.push(h("p", {className: "muted gate", id: "run-gate"}, why));
  } else {
    lines.push(h("p", {className: `callout ${gate.passed ? "good" : "bad"} gate`, id: "run-gate"},
      h("strong", null, gate.passed ? "Gate passed: " : "Gate refused: "),
      `validation accuracy ${accuracy(gate.accuracy)}`, gateBaseline(gate, spec),
      // the refusal's reason is the run's, shown above already
      !gate.passed && gate.reason && gate.reason !== run.reason
        ? h("span", {className: "small gate-reason"}, `${gate.reason}.`) : null));
  }
  if (run.result?.released && run.result.version) {
    lines.push(h("p", {className: "released", id: "run-release"}, "Signed release ",
      h("a", {href: "#/releases"}, spec.release), " ", code(run.result.version),
      ", its provenance naming this run."));
  }
  if (run.result?.deployment) {
    const href = `#/deployments/${encodeURIComponent(run.result.deployment)}`;
    lines.push(h("p", {className: "deployed", id: "run-deployment"}, "Deployed as a canary: ",
      h("a", {href}, run.result.deployment), "."));
  } else if (spec.then === "canary" && run.result?.released) {
    lines.push(h("p", {className: "muted"}, "The canary deployment has not been made yet."));
  }
  return lines;
}

/** What the gate compared the model with: the newest release, nothing (none yet), or it stopped before. */
function gateBaseline(gate, spec) {
  if (gate.baseline === null) return `; no earlier ${spec.release} release to compare with.`;
  if (gate.baseline === undefined) return ".";  // refused before comparing (--min-accuracy, unreadable release)
  return ` against ${spec.release} ${gate.baseline_version}'s ${accuracy(gate.baseline)} `
    + `(at most ${points(gate.max_drop)} lower allowed).`;
}

function roundCharts(run) {
  const rounds = measured(run);
  // The whole run when it is short; a long one's axis grows with it rather than squeezing the start.
  const top = Math.max(Math.min(run.spec.rounds, SHOWN_AHEAD), rounds.at(-1)?.round ?? 1);
  const range = [0.5, top + 0.5];
  const at = (pick) => rounds.map((r) => [r.round, pick(r)]);
  const gate = run.result?.gate;
  const baseline = gate?.baseline !== null && gate?.baseline !== undefined
    ? [{name: `${run.spec.release} ${gate.baseline_version}`, dashed: true, color: 6,
      points: [[range[0], gate.baseline], [range[1], gate.baseline]]}] : [];
  const common = {range, axis: ROUND_AXIS, emptyText: NO_ROUND};
  const count = (v) => (Number.isInteger(v) ? String(v) : "");
  const charts = [
    lineChart({...common, title: "Accuracy", id: "accuracy", format: accuracy,
      series: rounds.length ? [{name: "accuracy", points: at((r) => r.accuracy)}, ...baseline] : []}),
    lineChart({...common, title: "Loss", id: "loss",
      series: [{name: "loss", color: 3, points: at((r) => r.loss)}]}),
    lineChart({...common, title: "Bytes a round", id: "bytes", format: bytes,
      series: [{name: "up", color: 1, points: at((r) => r.bytes_up)},
        {name: "down", color: 2, points: at((r) => r.bytes_down)}]}),
    lineChart({...common, title: "Devices", id: "devices", format: count,
      series: [{name: "updates used", color: 0, points: at((r) => r.participants)},
        {name: "sampled", color: 5, dashed: true, points: at((r) => r.sampled.length)}]}),
  ];
  if (rounds.some((r) => r.epsilon !== null)) {
    const budget = run.spec.epsilon_budget;
    charts.push(lineChart({...common, title: "Privacy spent (ε)", id: "epsilon",
      series: [{name: "ε", color: 4, points: at((r) => r.epsilon)},
        ...(budget !== null ? [{name: "budget", dashed: true, color: 3, points: [[range[0], budget], [range[1], budget]]}]
          : [])]}));
  }
  return charts;
}

/** The sampled devices of the current round with their answers (and any answer from elsewhere). */
function answers(round) {
  const byDevice = new Map(round.updates.map((u) => [u.device, u]));
  const devices = [...round.sampled, ...round.updates.map((u) => u.device).filter((d) => !round.sampled.includes(d))];
  return devices.map((device) => {
    const update = byDevice.get(device);
    if (update) return {device, status: update.status, update};
    return {device, status: round.status === "open" ? "waiting" : "no answer", update: null};
  });
}

function currentRound(run, now) {
  const round = run.current;
  if (!round) {
    return [h("h2", null, "Current round"), empty("No round has opened yet.",
      run.waiting ? `Waiting: ${run.waiting}.` : ACTIVE.has(run.status) ? "The first round opens in a moment."
        : "The run ended before its first round.")];
  }
  const open = round.status === "open";
  const rows = answers(round);
  const closed = (run.rounds ?? []).find((r) => r.round === round.round)?.closed ?? null;
  const answered = rows.filter((r) => r.update !== null).length;
  const cell = (value, format = number) => h("td", {className: "num"},
    value === null || value === undefined ? h("span", {className: "muted"}, "—") : format(value));
  return [
    h("div", {className: "panel-head"},
      h("h2", null, `${open ? "Open round" : "Last round"} ${round.round} `, badge(round.status)),
      h("span", {className: "muted small round-clock"}, `${answered} of ${round.sampled.length} sampled answered`,
        open ? [" · closes ", timeAgo(round.deadline, now)] : closed !== null ? [" · closed ", timeAgo(closed, now)]
          : null)),
    h("div", {className: "table-wrap"}, h("table", {className: "grid-table"},
      tableHead(["Device", "Update", "Examples", "Loss", "Training", "Up", "Down", "Copies", "Received", "Reason"],
        ["Examples", "Loss", "Training", "Up", "Down", "Copies"]),
      h("tbody", null, rows.map(({device, status, update}) => h("tr", {dataset: {device}},
        h("td", null, h("a", {href: `#/devices/${encodeURIComponent(device)}`}, device),
          round.sampled.includes(device) ? null : h("span", {className: "tag"}, "not sampled")),
        h("td", {className: "update-status"}, badge(status,
          status === "waiting" ? "sampled; no update yet" : status === "no answer" ? "sent nothing before the round closed" : null)),
        cell(update?.examples || null),
        cell(update?.loss),
        cell(update?.train_seconds, seconds),
        cell(update?.bytes_up || null, bytes),
        cell(update?.bytes_down || null, bytes),
        cell(update?.duplicates || null),
        h("td", null, update ? timeAgo(update.received, now) : h("span", {className: "muted"}, "—")),
        h("td", {className: "error-cell"}, update?.reason ?? h("span", {className: "muted"}, "—"))))))),
  ];
}

function roundTable(run, now) {
  const rounds = [...(run.rounds ?? [])].reverse();
  if (!rounds.length) return h("p", {className: "muted"}, "No round yet.");
  const shown = rounds.slice(0, MAX_ROUNDS);
  const openUpdates = run.current?.status === "open" ? run.current.updates : [];
  const sum = (key) => openUpdates.reduce((total, u) => total + (u[key] ?? 0), 0);
  const dash = () => h("span", {className: "muted"}, "—");
  return [h("div", {className: "table-wrap"}, h("table", {className: "grid-table"},
    tableHead(["Round", "Status", "Updates", "Accuracy", "Loss", "Up", "Down", "ε", "Took", "Reason"],
      ["Accuracy", "Loss", "Up", "Down", "ε"]),
    h("tbody", null, shown.map((r) => {
      const open = r.status === "open";
      const up = open ? sum("bytes_up") : r.bytes_up;  // an open round's totals are counted when it closes
      const down = open ? sum("bytes_down") : r.bytes_down;
      return h("tr", {dataset: {round: String(r.round)}, className: r.status === "failed" ? "row-bad" : ""},
        h("td", null, String(r.round)),
        h("td", null, badge(r.status)),
        h("td", null, open ? `${openUpdates.filter((u) => u.status === "accepted").length} of ${r.sampled.length} so far`
          : `${r.participants} of ${r.sampled.length}`),
        h("td", {className: "num"}, open ? dash() : accuracy(r.accuracy)),
        h("td", {className: "num"}, open || r.loss === null ? dash() : number(r.loss)),
        h("td", {className: "num"}, up ? bytes(up) : dash()),
        h("td", {className: "num"}, down ? bytes(down) : dash()),
        h("td", {className: "num"}, r.epsilon === null ? dash() : number(r.epsilon)),
        h("td", null, open ? ["closes ", timeAgo(r.deadline, now)] : r.closed ? seconds(r.closed - r.opened) : dash()),
        h("td", {className: "error-cell"}, r.reason ?? dash()));
    })))),
  rounds.length > shown.length ? h("p", {className: "muted more"},
    `Showing the newest ${shown.length} of ${rounds.length} rounds.`) : null];
}
