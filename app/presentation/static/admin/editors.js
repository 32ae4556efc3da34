// One editor per PATCH /config field, chosen from the field's JSON schema in /openapi.json,
// so fields a newer server accepts appear here without a change to the console: scalars get
// an input, lists of strings a textarea (one per line), maps and lists of flat objects a
// table, objects a group of fields, lists and maps of nested objects a group per item (add,
// remove); every structured editor can switch to the value as JSON and back. Anything the
// schema does not describe is a JSON textarea.

import { h, prose } from "./dom.js";

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
  cdn_health: "CDN health checks",
  content_steering: "Content steering (HLS and DASH players)",
  rate_limit: "Default rate limit (per client)",
  regions: "Regions",
};
// Labels of the fields inside structured values (a region's, a health check setting, ...).
const PART_LABELS = {
  name: "Name",
  countries: "Countries",
  networks: "Networks",
  cdn_hosts: "CDN hosts",
  host: "Host",
  weight: "Weight",
  pathway: "Pathway (content steering)",
  ttl_seconds: "Players reload every (seconds)",
  cdn_weight: "CDN weight",
  origin_weight: "Origin weight",
  enabled: "On",
  path: "Path probed",
  method: "Method",
  interval_seconds: "Every (seconds)",
  timeout_seconds: "Timeout (seconds)",
  fall: "Failures to take a host out",
  rise: "Successes to bring it back",
  capacity: "Capacity (requests at once)",
  refill_per_second: "Refill per second",
};
const PART_CHOICES = { method: ["HEAD", "GET"] };
const KEY_LABELS = { server_rules: "Server", regions: "Region" };
const ITEM_LABELS = { regions: "region", server_rules: "server rule" };
const NULL_LABELS = { rate_limit: "No default limit (off)" };
const REDIRECT_STATUSES = [301, 302, 307, 308];

export class InputError extends Error {}

let uniqueIds = 0;
function uid(prefix) {
  uniqueIds += 1;
  return `${prefix}-${uniqueIds}`;
}

function partLabel(name) {
  return PART_LABELS[name] || (name.charAt(0).toUpperCase() + name.slice(1)).replaceAll("_", " ");
}

function nullable(schema) {
  return (schema?.anyOf || schema?.oneOf || []).some((option) => option.type === "null");
}

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
  if (mapRow) return withJsonView(tableEditor(name, label, schema.description, mapRow, KEY_LABELS[name] || "Key"));
  const listRow = schema.type === "array" && flatObject(schema.items, root);
  if (listRow) return withJsonView(tableEditor(name, label, schema.description, listRow, null));
  const structured = structuredEditor(name, label, property, schema, root);
  if (structured) return withJsonView(structured);
  return jsonEditor(name, label, schema.description);
}

// --- structured values: objects, and lists or maps of objects -----------------------------

function described(schema, root) {
  const resolved = resolve(schema, root);
  return resolved.type === "object" && resolved.properties ? resolved : null;
}

function structuredEditor(name, label, property, schema, root) {
  if (described(schema, root)) {
    // Every PATCH field is optional (null in its schema); only these take null as a value.
    const group = groupEditor(name, label, schema.description, described(schema, root), root, nullable(property) ? NULL_LABELS[name] ?? null : null);
    return { ...group, grouped: true };
  }
  const item = schema.type === "array" ? described(schema.items, root) : null;
  const entry = schema.type === "object" && schema.additionalProperties ? described(schema.additionalProperties, root) : null;
  if (!item && !entry) return null;
  return itemsEditor(name, label, schema.description, item || entry, root, entry ? KEY_LABELS[name] || "Key" : null);
}

// An input for one part of a structured value: { element, read(), write(value), focus() }.
function partEditor(name, property, root, context) {
  const schema = resolve(property, root);
  const id = uid(`part-${name}`);
  const label = partLabel(name);
  const hint = (schema.description || property?.description)
    ? h("p", { class: "hint", id: `${id}-hint` }, prose(schema.description || property.description))
    : null;
  const box = (control, wide = false) => h("div", { class: `field${wide ? " grow" : ""}${schema.type === "boolean" ? " checkbox" : ""}`, "data-part": name },
    schema.type === "boolean" ? [control, h("label", { for: id }, label)] : [h("label", { for: id }, label), control], hint);
  if (PART_CHOICES[name] || (schema.enum && isScalar(schema))) {
    const options = PART_CHOICES[name] || schema.enum;
    const select = h("select", { id, "aria-describedby": hint ? `${id}-hint` : null }, options.map((option) => h("option", { value: String(option) }, String(option))));
    return {
      element: box(select),
      read: () => select.value,
      write: (value) => { select.value = value === undefined || value === null ? String(options[0]) : String(value); },
      focus: () => select.focus(),
    };
  }
  if (isScalar(schema)) {
    const input = scalarInput(id, schema, null);
    input.removeAttribute("aria-label");
    if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
    return {
      element: box(input, schema.type === "string"),
      read: () => readScalar(input, schema),
      write: (value) => writeScalar(input, schema, value),
      focus: () => input.focus(),
    };
  }
  if (schema.type === "array" && resolve(schema.items, root).type === "string") {
    const input = h("input", { id, type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": hint ? `${id}-hint` : null });
    return {
      element: box(input, true),
      read: () => input.value.split(/[\s,]+/).filter(Boolean),
      write: (value) => { input.value = Array.isArray(value) ? value.join(", ") : ""; },
      focus: () => input.focus(),
    };
  }
  const rows = schema.type === "array" && flatObject(schema.items, root);
  if (rows) {
    const table = tableEditor(`${context}-${name}`, label, schema.description, rows, null);
    return {
      element: h("div", { class: "part-table", "data-part": name }, table.control, hint),
      read: () => table.read(),
      write: (value) => table.write(value),
      focus: () => table.focus(),
    };
  }
  const json = jsonEditor(`${context}-${name}`, `${label} (JSON)`, schema.description);
  json.control.id = id;
  return {
    element: box(json.control, true),
    // An optional part left empty (a region's own content steering) is left out.
    read: () => (json.control.value.trim() === "" ? undefined : json.read()),
    write: (value) => json.write(value),
    focus: () => json.focus(),
  };
}

// The parts of one object; `read()` leaves out what is empty (an optional weight, a pool of
// no hosts), as the server's answers do, so an untouched value reads as it was written.
function partsOf(schema, root, context) {
  const parts = Object.entries(schema.properties).map(([part, property]) => [part, partEditor(part, property, root, context)]);
  return {
    elements: parts.map(([, part]) => part.element),
    read: () => {
      const value = {};
      for (const [part, editor] of parts) {
        const read = editor.read();
        const required = (schema.required || []).includes(part);
        const empty = read === undefined || read === "" || (Array.isArray(read) && !read.length && !required && !["countries", "networks"].includes(part));
        if (!empty) value[part] = read;
      }
      return value;
    },
    write: (value) => { for (const [part, editor] of parts) editor.write(value?.[part]); },
    focus: () => parts[0]?.[1].focus(),
  };
}

function groupEditor(name, label, description, schema, root, noneLabel) {
  const parts = partsOf(schema, root, name);
  const body = h("div", { class: "row parts" }, parts.elements);
  let none = null;
  if (noneLabel) {
    const noneId = uid(`none-${name}`);
    none = h("input", { type: "checkbox", id: noneId });
    none.addEventListener("change", () => { body.hidden = none.checked; });
  }
  const fieldset = h("fieldset", { id: `input-${name}`, class: "group-editor" },
    h("legend", {}, label),
    none ? h("div", { class: "field checkbox" }, none, h("label", { for: none.id }, noneLabel)) : null,
    body);
  return {
    name, label, control: fieldset, description,
    read: () => (none?.checked ? null : parts.read()),
    write: (value) => {
      if (none) {
        none.checked = value === null || value === undefined;
        body.hidden = none.checked;
      }
      parts.write(value ?? {});
    },
    focus: () => (none || { focus: parts.focus }).focus(),
  };
}

// A list of objects (regions) or a map of them by key (server rules): a group per item.
function itemsEditor(name, label, description, schema, root, keyLabel) {
  const list = h("div", { class: "items" });
  const noun = ITEM_LABELS[name] || (keyLabel ? keyLabel.toLowerCase() : "item");
  const items = [];
  const changed = () => fieldset.dispatchEvent(new Event("input", { bubbles: true }));
  const renumber = () => items.forEach((item, index) => {
    item.legend.textContent = `${noun.charAt(0).toUpperCase()}${noun.slice(1)} ${index + 1}`;
    item.remove.textContent = `Remove ${noun} ${index + 1}`;
  });
  const add = (key, value) => {
    const parts = partsOf(schema, root, `${name}-${items.length}`);
    let keyInput = null;
    const keyId = uid(`key-${name}`);
    if (keyLabel) keyInput = h("input", { id: keyId, type: "text", autocomplete: "off", spellcheck: "false", value: key ?? "" });
    const legend = h("legend", {});
    const item = { legend, parts, keyInput };
    const remove = h("button", { type: "button", class: "secondary small", onclick: () => {
      items.splice(items.indexOf(item), 1);
      group.remove();
      renumber();
      changed();
    } });
    const group = h("fieldset", { class: "item" }, legend,
      keyInput ? h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: keyId }, keyLabel), keyInput)) : null,
      h("div", { class: "row parts" }, parts.elements),
      remove);
    item.remove = remove;
    items.push(item);
    list.append(group);
    parts.write(value ?? {});
    renumber();
    return item;
  };
  const fieldset = h("fieldset", { id: `input-${name}`, class: "items-editor" },
    h("legend", {}, label),
    list,
    h("button", { type: "button", class: "secondary small", onclick: () => { add(null, null).parts.focus(); changed(); } }, `Add a ${noun}`));
  return {
    name, label, control: fieldset, description, grouped: true,
    read: () => {
      if (!keyLabel) return items.map((item) => item.parts.read());
      const map = {};
      for (const item of items) {
        const key = item.keyInput.value.trim();
        if (key in map) throw new InputError(`${keyLabel} "${key}" appears twice.`);
        map[key] = item.parts.read();
      }
      return map;
    },
    write: (value) => {
      list.replaceChildren();
      items.length = 0;
      if (keyLabel) for (const [key, item] of Object.entries(value || {})) add(key, item);
      else for (const item of value || []) add(null, item);
    },
    focus: () => (items[0]?.parts || { focus: () => fieldset.querySelector("button").focus() }).focus(),
  };
}

// The value as JSON, a click away: what the form cannot say yet, or a copy to paste.
function withJsonView(editor) {
  const areaId = `json-${editor.name}`;
  const area = h("textarea", { id: areaId, rows: "8", spellcheck: "false", class: "code" });
  const areaBox = h("div", { class: "field json-view", hidden: true }, h("label", { for: areaId }, `${editor.label} as JSON`), area);
  const toggle = h("button", { type: "button", class: "secondary small json-toggle", "aria-controls": areaId, "aria-expanded": "false" }, "Edit as JSON");
  let json = false;
  const parse = () => {
    try {
      return JSON.parse(area.value);
    } catch (error) {
      throw new InputError(`not valid JSON: ${error.message}`);
    }
  };
  const show = (asJson) => {
    json = asJson;
    editor.control.hidden = asJson;
    areaBox.hidden = !asJson;
    toggle.textContent = asJson ? "Back to the form" : "Edit as JSON";
    toggle.setAttribute("aria-expanded", String(asJson));
  };
  toggle.addEventListener("click", () => {
    if (!json) {
      area.value = JSON.stringify(editor.read(), null, 2);
      show(true);
      area.focus();
      return;
    }
    editor.write(parse());
    show(false);
    editor.focus();
  });
  const control = h("div", { class: "with-json", id: `field-control-${editor.name}` }, editor.control, areaBox, toggle);
  return {
    ...editor,
    control,
    read: () => (json ? parse() : editor.read()),
    write: (value) => {
      editor.write(value);
      area.value = value === undefined ? "" : JSON.stringify(value, null, 2);
    },
    focus: () => (json ? area.focus() : editor.focus()),
  };
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
  const headers = [keyLabel, ...columns.map(([column]) => partLabel(column))].filter(Boolean);
  let count = 0;
  const addRow = (key, values = {}) => {
    count += 1;
    const rowLabel = `${label}, row ${count}`;
    const cells = [];
    let keyInput = null;
    if (keyLabel) {
      keyInput = h("input", { type: "text", value: key ?? "", "aria-label": `${rowLabel}: ${keyLabel}`, "data-key": "", autocomplete: "off" });
      cells.push(h("td", {}, keyInput));
    }
    const inputs = columns.map(([column, schema]) => {
      const input = scalarInput(null, schema, `${rowLabel}: ${partLabel(column).toLowerCase()}`);
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
