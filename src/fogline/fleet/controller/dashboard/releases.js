// The signed releases in the controller's repository, with the energy per inference each
// version's devices reported over the last day (measured or estimated, as a badge says),
// drawn as one bar per release version above the table.

import {api} from "./api.js";
import {bars} from "./charts.js";
import {badge, code, empty, h, replace} from "./dom.js";
import {bytes, compareVersions, joules, seconds, timeAgo} from "./format.js";

const SOON = 14 * 86400;
const ENERGY_SINCE = 86400;

/** "0.84 mJ" and a measured/estimated badge whose tooltip says how, or a dash. */
function energyCell(figure) {
  if (!figure || figure.joules_per_item === null) return h("span", {className: "muted"}, "—");
  const how = `${figure.labels.join("; ")} · ${figure.reports} reports from ${figure.devices} `
    + `device${figure.devices === 1 ? "" : "s"}, last 24 h`;
  return [joules(figure.joules_per_item), " ", badge(figure.kind, how)];
}

/** Joules per inference of each release version that reported energy: a bar each, its kind said. */
function energyChart(energy) {
  const figures = energy.filter((e) => e.joules_per_item !== null)
    .sort((a, b) => (a.release === b.release ? compareVersions(b.version, a.version)
      : a.release < b.release ? -1 : 1));
  const figure = h("figure", {className: "chart energy-bars", id: "energy-chart"},
    h("figcaption", null, h("span", {className: "chart-title"}, "Energy per inference, last 24 h")));
  if (!figures.length) {
    figure.append(h("div", {className: "chart-empty"}, "no release reported energy in this period"));
    return figure;
  }
  const top = Math.max(...figures.map((e) => e.joules_per_item));
  figure.append(bars(figures.map((e) => ({label: `${e.release} ${e.version}`, value: e.joules_per_item,
    className: `kind-${e.kind}`, text: `${joules(e.joules_per_item)} ${e.kind}`})), top));
  return figure;
}

export function releasesPage() {
  const chart = h("div", {id: "releases-energy"});
  const table = h("div", {className: "table-wrap", id: "releases"});
  const el = h("div", {className: "page releases"}, h("h1", null, "Releases"), chart, table);

  async function update(now) {
    const [releases, devices, energy] = await Promise.all([
      api("api/releases"), api("api/devices"), api(`api/energy?since=${now - ENERGY_SINCE}`)]);
    replace(chart, releases.length ? energyChart(energy) : null);
    if (!releases.length) {
      replace(table, empty("No releases yet.", "Publish a signed one with ",
        code("fogline release create MODEL_DIR --name NAME --version VERSION --key KEY"), "."));
      return;
    }
    const energyOf = (name, version) => energy.find((e) => e.release === name && e.version === version);
    const running = (name, version) => devices.filter((d) => d.state?.releases?.[name]?.version === version).length;
    const sorted = [...releases].sort((a, b) => (a.name === b.name ? compareVersions(b.version, a.version)
      : a.name < b.name ? -1 : 1));
    replace(table, h("table", {className: "grid-table"},
      h("thead", null, h("tr", null,
        ["Name", "Version", "Kind", "Files", "Size", "Created", "Expires", "Running on", "Energy / inference"]
          .map((t) => h("th", null, t)))),
      h("tbody", null, sorted.map((r) => {
        const expires = seconds(r.expires);
        const files = r.files ?? [];
        const size = files.reduce((sum, f) => sum + (f.length ?? 0), 0);
        const count = running(r.name, r.version);
        return h("tr", {dataset: {release: `${r.name}@${r.version}`}},
          h("td", null, h("strong", null, r.name), r.description ? h("div", {className: "muted small"}, r.description) : null),
          h("td", null, code(r.version), r.damaged
            ? [" ", badge("damaged", `${r.damaged}: the controller neither serves nor deploys it; check with 'fogline release verify'`)]
            : null),
          h("td", null, r.kind),
          h("td", {title: files.map((f) => `${f.path} (${bytes(f.length)})`).join("\n")}, String(files.length)),
          h("td", null, bytes(size)),
          h("td", null, timeAgo(seconds(r.created), now)),
          h("td", null, expires <= now ? badge("expired", "devices refuse an expired release")
            : expires - now < SOON ? [badge("expiring"), " ", timeAgo(expires, now)] : timeAgo(expires, now)),
          h("td", null, count ? `${count} device${count === 1 ? "" : "s"}` : h("span", {className: "muted"}, "—")),
          h("td", {className: "energy"}, energyCell(energyOf(r.name, r.version))));
      }))));
  }

  return {title: "Releases", el, update};
}
