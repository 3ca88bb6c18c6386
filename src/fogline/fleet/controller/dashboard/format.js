// Numbers, sizes and times as people read them.

const UNITS = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];

function span(seconds) {
  const abs = Math.abs(seconds);
  if (abs < 1) return "now";
  for (const [size, unit] of UNITS) {
    if (abs >= size) return `${Math.floor(abs / size)} ${unit}`;
  }
  return "now";
}

/** "12 s ago", "3 min ago", "in 2 d" for a Unix time in seconds. */
export function ago(time, now = Date.now() / 1000) {
  if (time === null || time === undefined) return "never";
  const text = span(now - time);
  if (text === "now") return "just now";
  return time <= now ? `${text} ago` : `in ${text}`;
}

/** A Unix time (seconds) or an ISO string as seconds. */
export function seconds(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "number" ? value : Date.parse(value) / 1000;
}

/** The full local date and time, for tooltips. */
export function when(time) {
  if (time === null || time === undefined) return "";
  return new Date(time * 1000).toLocaleString();
}

/** A <time> element showing "12 s ago" with the exact time on hover. */
export function timeAgo(time, now) {
  const node = document.createElement("time");
  node.textContent = ago(time, now);
  if (time !== null && time !== undefined) {
    node.dateTime = new Date(time * 1000).toISOString();
    node.title = when(time);
  }
  return node;
}

/** 1536 → "1.5 KiB". */
export function bytes(count) {
  if (count === null || count === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A short number: 0.123 → "0.12", 1234 → "1.2k". */
export function number(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(0)}k`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  if (abs >= 100 || Number.isInteger(value)) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2).replace(/\.?0+$/, "") || "0";
}

/** Joules as people read them: 0.00084 → "0.84 mJ", 2.5e-5 → "25 µJ", 1.5 → "1.5 J". */
export function joules(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (value === 0) return "0 J";
  for (const [scale, unit] of [[1, "J"], [1e-3, "mJ"], [1e-6, "µJ"]]) {
    if (Math.abs(value) >= scale) return `${number(value / scale)} ${unit}`;
  }
  return `${number(value / 1e-9)} nJ`;
}

/** 0.0234 → "2.3%". */
export function percent(fraction) {
  if (fraction === null || fraction === undefined) return "—";
  const value = fraction * 100;
  return `${value >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(1)}%`;
}

/** Compare PEP 440-ish versions well enough to sort them: numbers as numbers. */
export function compareVersions(a, b) {
  const pa = String(a).split(/[.+-]/);
  const pb = String(b).split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i += 1) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}
