// "Change": PATCH /config with If-Match. Only the fields the admin changed are sent; a 412
// keeps every edit and shows what the other admin saved; a 422 shows at the field it names.

import { ApiError, call } from "./api.js";
import { $, h, prose, replace, show, text } from "./dom.js";
import { InputError, editorFor, LABELS, resolve, same } from "./editors.js";
import { store } from "./store.js";

const ORDER = [
  "cdn_host", "cdn_hosts", "split", "redirect_status", "origin_domains", "origin_fallback",
  "down_servers", "server_rules", "regions", "cdn_health", "content_steering", "rate_limit",
];
const SPLIT = ["cdn_weight", "origin_weight", "origin_every"];
const FALLBACK_FIELDS = {
  cdn_host: { type: "string" }, cdn_weight: { type: "integer" }, origin_weight: { type: "integer" },
  origin_every: { type: "integer" }, redirect_status: { type: "integer" },
  origin_domains: { type: "array", items: { type: "string" } },
  server_rules: { type: "object", additionalProperties: { type: "object", properties: { cdn_weight: { type: "integer" }, origin_weight: { type: "integer" } } } },
};

export class ChangePanel {
  constructor({ onSaved, onUnauthorized }) {
    this.onSaved = onSaved;
    this.onUnauthorized = onUnauthorized;
    this.form = $("#change-form");
    this.editors = new Map();
    this.dirty = new Set();
    this.base = null;
    this.built = false;
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.save(); });
    $("#change-reset").addEventListener("click", () => this.rebase(store.config, true));
    $("#route-form").addEventListener("submit", (event) => { event.preventDefault(); this.checkRoute(); });
    store.onConfig((config) => this.onConfig(config));
  }

  async load() {
    if (this.built) return;
    let properties = FALLBACK_FIELDS;
    let root = null;
    try {
      const { data } = await call("/openapi.json");
      root = data;
      properties = resolve(data.components.schemas.ConfigPatch, data).properties || FALLBACK_FIELDS;
    } catch {
      // An older or stripped server: the fields every version has.
    }
    this.build(properties, root);
    this.built = true;
    if (store.config) this.rebase(store.config, true);
  }

  build(properties, root) {
    const names = Object.keys(properties).filter((name) => name !== "comment" && !SPLIT.includes(name));
    names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const hasSplit = SPLIT.some((name) => name in properties);
    if (hasSplit) names.splice(Math.min(rank("split"), names.length), 0, "split");
    names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const fields = [];
    for (const name of names) {
      if (name === "split") {
        fields.push(this.buildSplit(properties, root));
        continue;
      }
      const editor = editorFor(name, properties[name], root);
      this.editors.set(name, editor);
      fields.push(fieldBox(editor));
    }
    // Disabled until the active version is in the fields: an edit made before would be
    // overwritten by it (the console's first read, or another admin's change, landing late).
    this.fieldset = h("fieldset", { class: "bare", disabled: true }, fields);
    replace($("#change-fields"), [this.fieldset]);
    this.form.addEventListener("input", (event) => this.touch(event.target));
    this.form.addEventListener("change", (event) => this.touch(event.target));
  }

  buildSplit(properties, root) {
    const weights = ["cdn_weight", "origin_weight"].filter((name) => name in properties).map((name) => editorFor(name, properties[name], root));
    const every = "origin_every" in properties ? editorFor("origin_every", properties.origin_every, root) : null;
    for (const editor of [...weights, every].filter(Boolean)) this.editors.set(editor.name, editor);
    const modeWeights = h("input", { type: "radio", name: "split-mode", id: "split-mode-weights", value: "weights", checked: true });
    const modeEvery = h("input", { type: "radio", name: "split-mode", id: "split-mode-every", value: "every" });
    const weightsBox = h("div", { class: "row", id: "split-weights" }, weights.map(fieldBox));
    const everyBox = every ? h("div", { class: "row", id: "split-every", hidden: true }, fieldBox(every)) : null;
    const sync = () => {
      weightsBox.hidden = modeEvery.checked;
      if (everyBox) everyBox.hidden = !modeEvery.checked;
    };
    modeWeights.addEventListener("change", sync);
    modeEvery.addEventListener("change", sync);
    this.splitMode = () => (modeEvery.checked ? "every" : "weights");
    this.resetSplitMode = () => { modeWeights.checked = true; sync(); };
    return h("fieldset", { class: "field split", id: "field-split" },
      h("legend", {}, "Split between the CDN and the origin"),
      h("div", { class: "modes" },
        h("label", { for: "split-mode-weights" }, modeWeights, " Weights (CDN : origin)"),
        every ? h("label", { for: "split-mode-every" }, modeEvery, " Every N-th request to the origin") : null),
      weightsBox, everyBox);
  }

  touch(target) {
    const box = target.closest("[data-field]");
    if (box) this.dirty.add(box.dataset.field);
  }

  onConfig(config) {
    if (!this.built) return;
    if (!this.base || this.dirty.size === 0) {
      this.rebase(config, false);
      return;
    }
    if (config.version !== this.base.version) {
      $("#change-base").textContent = `You are editing version ${this.base.version}; version ${config.version} is active now. Saving will show what changed.`;
    }
  }

  rebase(config, clearMessages) {
    if (!config) return;
    this.base = config;
    this.dirty.clear();
    for (const [name, editor] of this.editors) {
      editor.write(name === "origin_every" ? undefined : config[name]);
      clearNote(name);
      clearError(name);
    }
    this.resetSplitMode?.();
    this.fieldset.disabled = false;
    $("#change-base").textContent = `Editing version ${config.version}. Only the fields you change are sent.`;
    if (clearMessages) {
      show($("#change-message"));
      $("#change-comment").value = "";
    }
  }

  collect() {
    const body = {};
    let valid = true;
    for (const [name, editor] of this.editors) {
      clearError(name);
      if (SPLIT.includes(name)) continue;
      try {
        const value = editor.read();
        if (!same(value, this.base[name])) body[name] = value;
      } catch (error) {
        if (!(error instanceof InputError)) throw error;
        setError(name, error.message);
        valid = false;
      }
    }
    if (this.splitMode?.() === "every") {
      const every = this.editors.get("origin_every").read();
      if (every !== undefined && !(every - 1 === this.base.cdn_weight && this.base.origin_weight === 1)) body.origin_every = every;
    } else {
      for (const name of ["cdn_weight", "origin_weight"]) {
        const editor = this.editors.get(name);
        if (!editor) continue;
        const value = editor.read();
        if (!same(value, this.base[name])) body[name] = value === undefined ? null : value;
      }
    }
    return valid ? body : null;
  }

  async save() {
    const message = $("#change-message");
    show(message);
    message.classList.remove("ok");
    const body = this.collect();
    if (!body) {
      show(message, "Some fields are not valid; see the notes next to them.");
      return;
    }
    if (!Object.keys(body).length) {
      show(message, "Nothing to change: every field holds the active value.");
      return;
    }
    const comment = $("#change-comment").value.trim();
    if (comment) body.comment = comment;
    const button = $("#change-save");
    button.disabled = true;
    try {
      const { data } = await call("/config", { method: "PATCH", body, ifMatch: this.base.version });
      store.setConfig(data);
      this.rebase(data, true);
      message.classList.add("ok");
      show(message, `Saved as version ${data.version}.`);
      this.onSaved(data);
    } catch (error) {
      await this.failed(error, message);
    } finally {
      button.disabled = false;
    }
  }

  async failed(error, message) {
    if (!(error instanceof ApiError)) throw error;
    if (error.unauthorized) this.onUnauthorized(error);
    if (error.status === 412) {
      await this.conflict(message);
      return;
    }
    if (error.status === 422) {
      const items = error.errors.length ? error.errors : [{ field: error.field, message: error.problem.detail }];
      const unplaced = [];
      let first = null;
      for (const item of items) {
        const name = this.fieldName(item.field);
        if (name) {
          setError(name, item.message || error.problem.detail);
          first = first || name;
        } else unplaced.push(item.message || error.problem.detail);
      }
      show(message, `Not saved: ${unplaced.length ? unplaced.join("; ") : "see the note next to the field."}`);
      if (first) this.editors.get(first)?.focus();
      return;
    }
    show(message, `Not saved: ${error.message}`);
  }

  fieldName(path) {
    // `regions[1].countries`, `cdn_health.interval_seconds`: the field is the first name.
    const head = String(path || "").split(/[.[]/)[0];
    if (head === "comment") return "comment";
    return this.editors.has(head) ? head : null;
  }

  async conflict(message) {
    let newest;
    try {
      newest = (await call("/config/history", { query: { limit: 1 } })).data.items[0];
    } catch (error) {
      show(message, `Someone else changed the configuration, and the newer version could not be read: ${error.message}`);
      return;
    }
    const changed = [];
    for (const [name, editor] of this.editors) {
      if (name === "origin_every" || same(newest[name], this.base[name])) continue;
      changed.push(LABELS[name] || name);
      if (this.dirty.has(name) || (SPLIT.includes(name) && this.splitMode?.() === "every")) {
        setNote(name, `Changed meanwhile in version ${newest.version} to: ${text(newest[name])}. Your value is kept; saving again applies it.`);
      } else {
        editor.write(newest[name]);
        setNote(name, `Updated to version ${newest.version}'s value: ${text(newest[name])}.`);
      }
    }
    this.base = newest;
    store.setConfig(newest);
    $("#change-base").textContent = `Editing version ${newest.version}. Only the fields you change are sent.`;
    const by = newest.comment ? ` (comment: “${newest.comment}”)` : "";
    show(message,
      `412: version ${newest.version} was saved by someone else while you edited${by}. ` +
      `Nothing of yours was saved and nothing is lost: ${changed.length ? `changed meanwhile: ${changed.join(", ")}.` : "no field you see changed."} ` +
      "Check the marked fields and save again.");
  }

  async checkRoute() {
    const result = $("#route-result");
    clearError("route-ip");
    clearError("route-video");
    const query = { ip: $("#route-ip").value.trim(), video: $("#route-video").value.trim() };
    try {
      const { data } = await call("/config/route", { query });
      replace(result, h("dl", { class: "counters", id: "route-answer" },
        Object.entries(data || {}).map(([name, value]) => h("div", {}, h("dt", {}, name.replaceAll("_", " ")), h("dd", {}, text(value))))));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.missing) {
        replace(result, h("p", { class: "note" }, "Route check (GET /config/route) is not available on this server."));
        return;
      }
      if (error.unauthorized) this.onUnauthorized(error);
      const name = String(error.field || "").split(".").pop();
      if (name === "ip" || name === "video") setError(`route-${name}`, error.problem.detail || error.message);
      replace(result, h("p", { class: "alert" }, error.message));
    }
  }
}

function rank(name) {
  const index = ORDER.indexOf(name);
  return index === -1 ? ORDER.length : index;
}

function fieldBox(editor) {
  const errorId = `error-${editor.name}`;
  const noteId = `newer-${editor.name}`;
  const described = editor.control.matches("fieldset") ? editor.control : editor.control;
  described.setAttribute("aria-describedby", `${noteId} ${errorId}`);
  const label = editor.grouped ? null : h("label", { for: editor.labelFor }, editor.label);
  return h("div", { class: `field${editor.checkbox ? " checkbox" : ""}`, id: `field-${editor.name}`, "data-field": editor.name },
    editor.checkbox ? [editor.control, label] : [label, editor.control],
    editor.description ? h("p", { class: "hint" }, prose(editor.description)) : null,
    h("p", { class: "newer", id: noteId, hidden: true }),
    h("p", { class: "field-error", id: errorId, hidden: true }));
}

function setError(name, message) {
  const slot = document.getElementById(`error-${name}`);
  if (!slot) return;
  show(slot, message);
  document.getElementById(`input-${name}`)?.setAttribute("aria-invalid", "true");
  document.getElementById(name)?.setAttribute("aria-invalid", "true");
}

function clearError(name) {
  const slot = document.getElementById(`error-${name}`);
  if (slot) show(slot);
  document.getElementById(`input-${name}`)?.removeAttribute("aria-invalid");
  document.getElementById(name)?.removeAttribute("aria-invalid");
}

function setNote(name, message) {
  const slot = document.getElementById(`newer-${name}`);
  if (slot) show(slot, message);
}

function clearNote(name) {
  const slot = document.getElementById(`newer-${name}`);
  if (slot) show(slot);
}
