// Building DOM nodes without innerHTML: every text from the API goes in as text, never as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

function apply(node, attrs, isSvg) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "style") {
      Object.assign(node.style, value);  // CSSOM, which the page's CSP allows (style attributes it does not)
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (!isSvg && name in node && typeof node[name] !== "function" && name !== "list") {
      node[name] = value;  // value, checked, hidden, className…
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("a", {href: "#/", className: "x"}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  apply(node, attrs, false);
  append(node, children);
  return node;
}

/**
 * Replace a node's children, skipping null, undefined and false and flattening arrays like h().
 *
 * The DOM's own replaceChildren (and append) turn null into the text "null": pages use this instead.
 */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** An SVG element, attributes set verbatim. */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, attrs, true);
  append(node, children);
  return node;
}

/** A coloured pill for a status word; the word is also its CSS class. */
export function badge(word, extra) {
  const text = word ?? "unknown";
  return h("span", {className: `badge st-${text.replace(/[^a-z-]/gi, "")}`, title: extra ?? null}, text);
}

/** A card that says there is nothing here yet and what to do about it. */
export function empty(title, ...hint) {
  return h("div", {className: "empty"}, h("strong", null, title), hint.length ? h("p", null, ...hint) : null);
}

/** Monospace text, for versions, ids and commands. */
export const code = (text) => h("code", null, text);
