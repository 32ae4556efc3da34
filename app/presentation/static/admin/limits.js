// "Limits": per-client rate limits through /limits (list, add, edit, delete).

import { ApiError, call } from "./api.js";
import { $, h, show, text } from "./dom.js";
import { confirmDialog } from "./dialog.js";

const PAGE = 50;
const FIELDS = ["client_id", "capacity", "refill_per_second", "comment"];

export class LimitsPanel {
  constructor({ onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
    this.body = $("#limits-table tbody");
    this.form = $("#limit-form");
    this.editing = null;
    this.next = null;
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.save(); });
    $("#limit-cancel").addEventListener("click", () => this.edit(null));
    $("#limits-more").addEventListener("click", () => this.load(this.next));
  }

  async load(after = null) {
    const message = $("#limits-message");
    if (after === null) show(message);
    let page;
    try {
      page = (await call("/limits", { query: { limit: PAGE, after } })).data;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      $("#limits-body").hidden = error.missing;
      if (error.missing) {
        message.classList.add("note");
        show(message, "Per-client limits (/limits) are not available on this server.");
        return;
      }
      if (error.unauthorized) this.onUnauthorized(error);
      show(message, `The limits could not be read: ${error.message}`);
      return;
    }
    message.classList.remove("note");
    $("#limits-body").hidden = false;
    if (after === null) this.body.replaceChildren();
    for (const item of page.items || []) this.body.append(this.row(item));
    if (!this.body.rows.length) {
      this.body.append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No per-client limits: every client gets the default.")));
    }
    this.next = page.next_after ?? null;
    $("#limits-more").hidden = this.next === null;
  }

  row(item) {
    return h("tr", { "data-client": item.client_id },
      h("th", { scope: "row" }, item.client_id),
      h("td", {}, text(item.capacity)),
      h("td", {}, text(item.refill_per_second)),
      h("td", {}, item.comment || "",
        item.actor ? h("span", { class: "muted actor" }, ` (by ${item.actor.name})`) : ""),
      h("td", { class: "actions needs-operator" },
        h("button", { type: "button", class: "secondary small", "aria-label": `Edit the limit of ${item.client_id}`, onclick: () => this.edit(item) }, "Edit"),
        h("button", { type: "button", class: "danger small", "aria-label": `Delete the limit of ${item.client_id}`, onclick: () => this.remove(item) }, "Delete")));
  }

  edit(item) {
    this.editing = item ? item.client_id : null;
    for (const name of FIELDS) {
      const input = $(`#limit-${name}`);
      input.value = item && item[name] !== null && item[name] !== undefined ? String(item[name]) : "";
      clearError(name);
    }
    $("#limit-client_id").readOnly = Boolean(item);
    $("#limit-form-title").textContent = item ? `Edit the limit of ${item.client_id}` : "Add a limit";
    $("#limit-save").textContent = item ? "Save limit" : "Add limit";
    $("#limit-cancel").hidden = !item;
    if (item) $("#limit-capacity").focus();
  }

  values() {
    const number = (name) => {
      const raw = $(`#limit-${name}`).value.trim();
      if (raw === "") return null;
      const value = Number(raw);
      return Number.isFinite(value) ? value : raw;
    };
    const comment = $("#limit-comment").value.trim();
    return {
      capacity: number("capacity"),
      refill_per_second: number("refill_per_second"),
      comment: comment || null,
    };
  }

  async save() {
    const message = $("#limits-message");
    message.classList.remove("ok", "note");
    show(message);
    for (const name of FIELDS) clearError(name);
    const body = this.values();
    const editing = this.editing;
    try {
      if (editing === null) {
        await call("/limits", { method: "POST", body: { client_id: $("#limit-client_id").value.trim(), ...body } });
      } else {
        await call(`/limits/${encodeURIComponent(editing)}`, { method: "PUT", body });
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.unauthorized) this.onUnauthorized(error);
      if (error.status === 409) {
        setError("client_id", error.problem.detail || "A limit for this client exists already; edit it instead.");
      } else if (error.status === 422) {
        const items = error.errors.length ? error.errors : [{ field: error.field, message: error.problem.detail }];
        for (const item of items) {
          const name = String(item.field || "").split(".")[0];
          if (FIELDS.includes(name)) setError(name, item.message || error.problem.detail);
          else show(message, `Not saved: ${item.message || error.message}`);
        }
      } else show(message, `Not saved: ${error.message}`);
      return;
    }
    this.edit(null);
    await this.load();
    message.classList.add("ok");
    show(message, editing === null ? "Limit added." : `Limit of ${editing} saved.`);
  }

  async remove(item) {
    const answer = await confirmDialog({
      title: `Delete the limit of ${item.client_id}?`,
      message: "The client falls back to the default limit.",
      confirm: "Delete",
    });
    if (!answer) return;
    const message = $("#limits-message");
    message.classList.remove("ok", "note");
    try {
      await call(`/limits/${encodeURIComponent(item.client_id)}`, { method: "DELETE" });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.unauthorized) this.onUnauthorized(error);
      show(message, `Not deleted: ${error.message}`);
      return;
    }
    if (this.editing === item.client_id) this.edit(null);
    await this.load();
    message.classList.add("ok");
    show(message, `Limit of ${item.client_id} deleted.`);
  }
}

function setError(name, message) {
  show($(`#error-limit-${name}`), message);
  $(`#limit-${name}`).setAttribute("aria-invalid", "true");
}

function clearError(name) {
  show($(`#error-limit-${name}`));
  $(`#limit-${name}`).removeAttribute("aria-invalid");
}
