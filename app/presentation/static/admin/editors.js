// One editor per PATCH /config field, chosen from the field's JSON schema in /openapi.json,
// so fields a newer server accepts appear here without a change to the console: scalars get
// an input, lists of strings a textarea (one per line), maps and lists of flat objects a
// table, and anything else a JSON textarea.

import { h } from "./dom.js";

export const LABELS = {
  cdn_host: "CDN host",
  cdn_hosts: "CDN pool (hosts and weights)",
  cdn_weight: "CDN weight",
  origin_weight: "Origin weight",
  origin_every: "Every N-th request to the origin",
  redirect_status: "Redirect status",
  origin_domains: "Allowed origin domains (one per line)",
  origin_fallback: "Send to the origin when every CDN host is down",
  down_servers: "Origin servers marked down (one per line)",
  server_rules: "Per-server rules",
  cdn_health: "CDN health checks (JSON)",
  rate_limit: "Default rate limit (JSON, null for none)",
  regions: "Regions",
};
const KEY_LABELS = { server_rules: "Server", regions: "Region" };
const REDIRECT_STATUSES = [301, 302, 307, 308];

export class InputError extends Error {}

export function resolve(schema, root) {
  let current = schema || {};
  for (let depth = 0; depth < 10; depth += 1) {
    if (current.$ref) {
      const name = current.$ref.split("/").pop();
      current = root?.components?.schemas?.[name] || {};
    } else if (current.anyOf || current.oneOf) {
      const options = (current.anyOf || current.oneOf).filter((option) => option.type !== "null");
      if (options.length !== 1) return current;
      current = { ...options[0], description: current.description || options[0].description };
    } else return current;
  }
  return current;
}

function isScalar(schema) {
  return ["string", "integer", "number", "boolean"].includes(schema.type);
}

function flatObject(schema, root) {
  const resolved = resolve(schema, root);
  if (resolved.type !== "object" || !resolved.properties) return null;
  const properties = Object.entries(resolved.properties).map(([name, property]) => [name, resolve(property, root)]);
  return properties.every(([, property]) => isScalar(property)) ? properties : null;
}

export function same(a, b) {
  return canonical(a) === canonical(b);
}

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

function number(raw, schema) {
  const trimmed = raw.trim();
  if (trimmed === "") return undefined;
  const value = Number(trimmed);
  if (!Number.isFinite(value)) return trimmed; // the server names what is wrong with it
  return schema.type === "integer" && !Number.isInteger(value) ? value : value;
}

function scalarInput(id, schema, label) {
  if (schema.type === "boolean") return h("input", { id, type: "checkbox", "aria-label": label });
  if (schema.type === "integer" || schema.type === "number") {
    return h("input", { id, type: "number", inputmode: "numeric", step: schema.type === "integer" ? "1" : "any", "aria-label": label });
  }
  return h("input", { id, type: "text", autocomplete: "off", spellcheck: "false", "aria-label": label });
}

function readScalar(input, schema) {
  if (schema.type === "boolean") return input.checked;
  if (schema.type === "integer" || schema.type === "number") return number(input.value, schema);
  return input.value.trim();
}

function writeScalar(input, schema, value) {
  if (schema.type === "boolean") input.checked = Boolean(value);
  else input.value = value === undefined || value === null ? "" : String(value);
}

// Editors: { name, control (the element to put in the form), read(), write(value), focus() }.

export function editorFor(name, property, root) {
  const schema = resolve(property, root);
  const id = `input-${name}`;
  const label = LABELS[name] || name.replaceAll("_", " ");
  if (name === "redirect_status" || (schema.enum && isScalar(schema))) {
    const options = schema.enum || REDIRECT_STATUSES;
    const select = h("select", { id }, options.map((option) => h("option", { value: String(option) }, String(option))));
    return {
      name, label, labelFor: id, control: select, description: schema.description,
      read: () => (typeof options[0] === "number" ? Number(select.value) : select.value),
      write: (value) => { select.value = String(value ?? options[0]); },
      focus: () => select.focus(),
    };
  }
  if (isScalar(schema)) {
    const input = scalarInput(id, schema, null);
    input.removeAttribute("aria-label");
    return {
      name, label, labelFor: id, control: input, description: schema.description, checkbox: schema.type === "boolean",
      read: () => readScalar(input, schema),
      write: (value) => writeScalar(input, schema, value),
      focus: () => input.focus(),
    };
  }
  if (schema.type === "array" && resolve(schema.items, root).type === "string") {
    const area = h("textarea", { id, rows: "3", spellcheck: "false" });
    return {
      name, label, labelFor: id, control: area, description: schema.description,
      read: () => area.value.split("\n").map((line) => line.trim()).filter(Boolean),
      write: (value) => { area.value = Array.isArray(value) ? value.join("\n") : ""; },
      focus: () => area.focus(),
    };
  }
  const mapRow = schema.type === "object" && schema.additionalProperties && flatObject(schema.additionalProperties, root);
  if (mapRow) return tableEditor(name, label, schema.description, mapRow, KEY_LABELS[name] || "Key");
  const listRow = schema.type === "array" && flatObject(schema.items, root);
  if (listRow) return tableEditor(name, label, schema.description, listRow, null);
  return jsonEditor(name, label, schema.description);
}

function jsonEditor(name, label, description) {
  const id = `input-${name}`;
  const area = h("textarea", { id, rows: "4", spellcheck: "false", class: "code" });
  return {
    name, label: LABELS[name] ? label : `${label} (JSON)`, labelFor: id, control: area, description,
    read: () => {
      try {
        return JSON.parse(area.value);
      } catch (error) {
        throw new InputError(`not valid JSON: ${error.message}`);
      }
    },
    write: (value) => { area.value = value === undefined ? "" : JSON.stringify(value, null, 2); },
    focus: () => area.focus(),
  };
}

// A table of rows; with keyLabel, the value is a map keyed by the first column.
function tableEditor(name, label, description, columns, keyLabel) {
  const body = h("tbody");
  const headers = [keyLabel, ...columns.map(([column]) => column.replaceAll("_", " "))].filter(Boolean);
  let count = 0;
  const addRow = (key, values = {}) => {
    count += 1;
    const rowLabel = `${label} row ${count}`;
    const cells = [];
    let keyInput = null;
    if (keyLabel) {
      keyInput = h("input", { type: "text", value: key ?? "", "aria-label": `${rowLabel}: ${keyLabel}`, "data-key": "", autocomplete: "off" });
      cells.push(h("td", {}, keyInput));
    }
    const inputs = columns.map(([column, schema]) => {
      const input = scalarInput(null, schema, `${rowLabel}: ${column.replaceAll("_", " ")}`);
      input.removeAttribute("id");
      writeScalar(input, schema, values[column]);
      input.dataset.column = column;
      cells.push(h("td", {}, input));
      return input;
    });
    const row = h("tr", {}, cells, h("td", {}, h("button", {
      type: "button", class: "secondary small", "aria-label": `Remove ${rowLabel}`,
      onclick: () => { row.remove(); fieldset.dispatchEvent(new Event("input", { bubbles: true })); },
    }, "Remove")));
    row.read = () => {
      const value = {};
      columns.forEach(([column, schema], index) => {
        const read = readScalar(inputs[index], schema);
        if (read !== undefined && read !== "") value[column] = read;
      });
      return { key: keyInput ? keyInput.value.trim() : null, value };
    };
    body.append(row);
    return row;
  };
  const fieldset = h("fieldset", { id: `input-${name}`, class: "table-editor" },
    h("legend", {}, label),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((header) => h("th", { scope: "col" }, header)), h("th", {}, h("span", { class: "visually-hidden" }, "Remove")))),
      body)),
    h("button", { type: "button", class: "secondary small", onclick: () => { addRow(); fieldset.dispatchEvent(new Event("input", { bubbles: true })); } },
      keyLabel ? `Add a ${keyLabel.toLowerCase()}` : "Add a row"));
  return {
    name, label, control: fieldset, description, grouped: true,
    read: () => {
      const rows = [...body.rows].map((row) => row.read());
      if (!keyLabel) return rows.map((row) => row.value);
      const map = {};
      for (const row of rows) {
        if (row.key in map) throw new InputError(`${keyLabel} "${row.key}" appears twice.`);
        map[row.key] = row.value;
      }
      return map;
    },
    write: (value) => {
      body.replaceChildren();
      count = 0;
      if (keyLabel) for (const [key, item] of Object.entries(value || {})) addRow(key, item);
      else for (const item of value || []) addRow(null, item);
    },
    focus: () => (body.querySelector("input") || fieldset.querySelector("button")).focus(),
  };
}
