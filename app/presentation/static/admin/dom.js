// Builds elements from data. Every value from the server goes in as a Text node or an
// attribute, never as markup: a comment holding `<script>` shows as those characters.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "value" || name === "checked") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function show(element, text) {
  element.textContent = text ?? "";
  element.hidden = !text;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() }, date.toLocaleString());
}

export function ago(iso) {
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

// Values as one line of text, for tables and diffs.
export function text(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

export function percent(share) {
  if (typeof share !== "number" || !Number.isFinite(share)) return "—";
  return `${(share * 100).toFixed(share < 0.1 ? 2 : 1)} %`;
}

// A description from the OpenAPI document, whose `code` spans are Markdown: the spans become
// <code> elements and the backticks go, the rest stays text.
export function prose(description) {
  return String(description ?? "").split("`").map((part, index) => (index % 2 ? h("code", {}, part) : part));
}
