// Deployments: each wave's progress, the status and why it stopped; one deployment with its
// devices, events and the Roll back button.

import {ApiError, api} from "./api.js";
import {progress} from "./charts.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {timeAgo} from "./format.js";
import {DEPLOY_STATUSES, eventList, strategyText, waves} from "./fleet.js";
import {gateNote} from "./monitoring.js";

const FILTERS = [["", "all"], ["running", "running"], ["succeeded", "succeeded"], ["rolled-back", "rolled back"]];

export function deploymentsPage(params) {
  const status = params.get("status") ?? "";
  const list = h("div", {id: "deployments"});
  const el = h("div", {className: "page deployments"},
    h("div", {className: "page-head"}, h("h1", null, "Deployments"),
      h("nav", {className: "tabs"}, FILTERS.map(([value, label]) =>
        h("a", {href: value ? `#/deployments?status=${value}` : "#/deployments",
          className: value === status ? "active" : ""}, label)))),
    list);

  async function update(now) {
    const all = await api("api/deployments");
    const shown = all.filter((d) => !status || d.status === status).reverse();
    if (!shown.length) {
      replace(list, all.length ? empty(`No ${status} deployment.`)
        : empty("No deployments yet.", "Roll a release out with ",
          code("fogline fleet deploy NAME VERSION --group GROUP --strategy canary"), "."));
      return;
    }
    replace(list, ...shown.map((d) => deploymentCard(d, now, true)));
  }

  return {title: "Deployments", el, update};
}

function deploymentCard(d, now, link, footer = null) {
  const title = [h("span", {className: "dep-release"}, d.release, " ", code(d.version)),
    h("span", {className: "muted"}, " → group "), h("strong", null, d.group)];
  return h("article", {className: `deployment panel dep-${d.status}`, dataset: {deployment: d.id}},
    h("header", {className: "dep-head"},
      h("h2", null, link ? h("a", {href: `#/deployments/${encodeURIComponent(d.id)}`}, title) : title),
      badge(d.status)),
    h("p", {className: "muted small dep-meta"},
      code(d.id), ` · ${strategyText(d.strategy)} · started `, timeAgo(d.created, now),
      " · updated ", timeAgo(d.updated, now)),
    d.reason ? h("p", {className: `callout ${d.status === "rolled-back" ? "bad" : "info"} reason`},
      h("strong", null, d.status === "rolled-back" ? "Rolled back: " : "Note: "), d.reason) : null,
    d.status === "running" && d.bake ? bakeNote(d.bake, now) : null,
    gateNote(d.gates),
    h("div", {className: "waves"}, waves(d).map((wave) => waveRow(d, wave))),
    footer);
}

/** Where the current wave's bake is: time left, or the devices whose telemetry it waits for. */
function bakeNote(bake, now) {
  if (!bake.waiting.length) return null;
  const left = bake.end - now;
  const who = bake.waiting.map((device) => {
    const last = bake.last_heard[device];
    const heard = last === null || last === undefined ? "no report on it yet" : `last report ${timeAgo(last, now)}`;
    return `${device} (${bake.silent.includes(device) ? "silent, " : ""}${heard})`;
  });
  return h("p", {className: "callout info bake"},
    h("strong", null, left > 0 ? `Baking, ${Math.ceil(left)} s to go: ` : "Bake waiting: "),
    `telemetry still needed from ${who.join(", ")}.`);
}

function waveRow(d, wave) {
  const current = d.status === "running" && wave.wave === d.wave;
  const segments = DEPLOY_STATUSES.map((status) => ({status, count: wave.counts[status] ?? 0}));
  return h("div", {className: `wave${current ? " current" : ""}`, dataset: {wave: String(wave.wave + 1)}},
    h("span", {className: "wave-label", title: current ? "the wave being rolled out now" : null},
      current ? h("i", {className: "now"}) : null, `wave ${wave.wave + 1}`,
      h("span", {className: "muted"}, ` · ${wave.total} device${wave.total === 1 ? "" : "s"}`)),
    progress(segments, wave.total),
    h("span", {className: "wave-counts"}, segments.filter((x) => x.count).map((x) =>
      h("span", {className: `count st-${x.status}`}, h("i"), `${x.count} ${x.status}`))));
}

export function deploymentPage(params) {
  const id = params.get("id");
  const card = h("div", {id: "deployment"});
  const devices = h("div", {className: "table-wrap", id: "deployment-devices"});
  const events = h("div", {id: "deployment-events"});
  const message = h("p", {className: "action-message", role: "status"});
  const el = h("div", {className: "page deployment-detail"},
    h("nav", {className: "crumbs"}, h("a", {href: "#/deployments"}, "Deployments"), " / ", h("span", null, id)),
    card, message,
    h("div", {className: "columns"},
      h("section", {className: "panel"}, h("h2", null, "Devices"), devices),
      h("section", {className: "panel"}, h("h2", null, "Events"), events)));
  let busy = false;

  async function rollBack(d, button) {
    const question = `Roll back ${d.release} ${d.version} on group ${d.group}?\n\n`
      + "Every device it reached goes back to the version it ran before; devices of later waves never get it.";
    if (!window.confirm(question)) return;
    busy = true;
    button.disabled = true;  // one click, one request
    message.className = "action-message";
    message.textContent = "rolling back…";
    try {
      await api(`api/deployments/${encodeURIComponent(d.id)}/rollback`, {method: "POST",
        body: {reason: "rolled back from the dashboard"}});
      message.textContent = "Rolled back: the devices are being told to return to their previous version.";
      message.classList.add("ok");
    } catch (err) {
      message.textContent = `Could not roll back: ${err.message}`;
      message.classList.add("bad");
    } finally {
      busy = false;
    }
    await update(Date.now() / 1000);
  }

  async function update(now) {
    let d;
    try {
      d = await api(`api/deployments/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(el, empty(`No deployment ${id}.`, h("a", {href: "#/deployments"}, "Back to the deployments")));
        return;
      }
      throw err;
    }
    const button = d.status === "rolled-back" ? null
      : h("button", {type: "button", className: "danger", id: "rollback", disabled: busy,
        onclick: (event) => rollBack(d, event.currentTarget)}, "Roll back");
    replace(card, deploymentCard(d, now, false, h("footer", {className: "dep-foot"},
      h("span", {className: "muted small"}, `Success criteria: ${d.criteria_text}.`), button)));
    replace(devices, h("table", {className: "grid-table"},
      h("thead", null, h("tr", null, ["Device", "Wave", "Status", "Previous", "Since"].map((t) => h("th", null, t)))),
      h("tbody", null, d.devices.map((x) => h("tr", {dataset: {device: x.device_id}},
        h("td", null, h("a", {href: `#/devices/${encodeURIComponent(x.device_id)}`}, x.device_id)),
        h("td", null, String(x.wave + 1)),
        h("td", null, badge(x.status)),
        h("td", null, x.previous ? code(x.previous) : h("span", {className: "muted"}, "none")),
        h("td", null, x.since ? timeAgo(x.since, now) : "—"))))));
    replace(events, eventList(d.events, now, "no events yet", {deployment: false}));
  }

  return {title: id, el, update};
}
