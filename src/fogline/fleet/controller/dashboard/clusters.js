// Edge clusters: per group, its dispatcher's counts and its nodes (state, took, finished,
// in flight, lag), each linked to the fleet device it runs on.

import {api} from "./api.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {number, timeAgo} from "./format.js";

const NODE_HINT = "fogline run PIPELINE.yaml";
const DISPATCHER_COUNTS = ["queued", "dispatched", "completed", "redispatched", "duplicates", "late"];

function deviceCell(node) {
  if (!node.device) return h("span", {className: "muted", title: "not run by a fleet agent"}, "—");
  if (!node.device_known) return h("span", {title: "no such device in this fleet"}, node.device);
  return h("a", {className: "device-link", href: `#/devices/${encodeURIComponent(node.device)}`}, node.device);
}

function dispatcherLine(dispatcher, now) {
  if (!dispatcher) {
    return h("p", {className: "muted dispatcher"}, "No dispatcher heard (nodes with ",
      code("dispatch: broker"), " share the topic round-robin, or it has not started).");
  }
  return h("p", {className: "dispatcher"}, "Dispatcher ", badge(dispatcher.state), " on ", code(dispatcher.topic),
    ` · window ${dispatcher.window} · `,
    DISPATCHER_COUNTS.map((key, index) => h("span", {dataset: {count: key}},
      index ? " · " : "", `${key} ${number(dispatcher[key])}`)),
    h("span", {className: "muted"}, " · heard ", timeAgo(dispatcher.heard, now)));
}

/** What the dispatcher counted for a node: it outlives the node (a killed one's last will cannot say). */
function dealtCell(counts) {
  if (!counts) return h("span", {className: "muted"}, "—");
  return `${number(counts.completed)} done · ${number(counts.outstanding)} out · `
    + `${number(counts.redispatched)} re-dispatched`;
}

function groupBlock(group, now) {
  const online = group.nodes.filter((n) => n.state === "online").length;
  return h("section", {className: "cluster", dataset: {group: group.group}},
    h("h2", null, group.group, h("span", {className: "muted"}, ` · ${online} of ${group.nodes.length} nodes online`)),
    dispatcherLine(group.dispatcher, now),
    group.nodes.length ? h("div", {className: "table-wrap"}, h("table", {className: "grid-table"},
      h("thead", null, h("tr", null, h("th", null, "Node"), h("th", null, "State"), h("th", null, "Device"),
        h("th", null, "Took"), h("th", null, "Finished"), h("th", null, "In flight"), h("th", null, "Lag"),
        h("th", null, "Dispatcher's count"), h("th", null, "Pipeline"), h("th", null, "Heard"))),
      h("tbody", null, group.nodes.map((node) => h("tr", {dataset: {node: node.node},
        className: node.state === "online" || node.state === "draining" ? "" : "row-bad"},
      h("td", null, code(node.node)),
      h("td", {dataset: {field: "state"}}, badge(node.state,
        node.state === "silent" ? `online, but not heard for ${Math.round(node.silent_s)} s` : null)),
      h("td", {dataset: {field: "device"}}, deviceCell(node)),
      h("td", {dataset: {field: "took"}}, number(node.took)),
      h("td", {dataset: {field: "finished"}}, number(node.finished)),
      h("td", {dataset: {field: "in_flight"}}, `${node.in_flight} of ${node.window}`),
      h("td", {dataset: {field: "lag"}}, node.lag_ms === null ? "—" : `${number(node.lag_ms)} ms`),
      h("td", {dataset: {field: "dealt"}}, dealtCell(group.dispatcher?.nodes?.[node.node])),
      h("td", null, node.pipeline || h("span", {className: "muted"}, "—")),
      h("td", null, timeAgo(node.heard, now))))))) : null);
}

export function clustersPage() {
  const body = h("div", {id: "clusters"});
  const el = h("div", {className: "page clusters"},
    h("div", {className: "page-head"}, h("h1", null, "Clusters")), body);

  async function update(now) {
    const groups = await api("api/clusters");
    if (!groups.length) {
      replace(body, empty("No edge clusters heard.",
        "Nodes announce themselves when a pipeline's mqtt source has ", code("share: GROUP"),
        " and runs (", code(NODE_HINT), ") on this fleet's broker."));
      return;
    }
    replace(body, groups.map((group) => groupBlock(group, now)));
  }

  return {title: "Clusters", el, update};
}
