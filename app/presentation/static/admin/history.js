// "History": versions newest first, each with what changed against the one before it, and a
// rollback (a new version with the old values) after a confirmation.

import { ApiError, call } from "./api.js";
import { $, h, show, text, when } from "./dom.js";
import { confirmDialog } from "./dialog.js";
import { store } from "./store.js";

const PAGE = 20;
const META = new Set(["version", "comment", "created_at", "actor"]);

function byline(actor) {
  if (!actor) return h("p", { class: "muted actor" }, "by: not recorded");
  const who = actor.issuer ? `${actor.name} (${actor.issuer})` : actor.name;
  return h("p", { class: "actor" }, "by ", h("strong", {}, who),
    actor.address ? h("span", { class: "muted" }, ` from ${actor.address}`) : "");
}

export function diff(newer, older) {
  if (!older) return [];
  const changes = [];
  const names = [...new Set([...Object.keys(newer), ...Object.keys(older)])].filter((name) => !META.has(name));
  for (const name of names) {
    const before = older[name];
    const after = newer[name];
    if (JSON.stringify(before) === JSON.stringify(after)) continue;
    const mapLike = (value) => value && typeof value === "object" && !Array.isArray(value);
    if (mapLike(before) && mapLike(after)) {
      for (const key of [...new Set([...Object.keys(before), ...Object.keys(after)])]) {
        if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) {
          changes.push({ name: `${name}.${key}`, before: before[key], after: after[key] });
        }
      }
    } else changes.push({ name, before, after });
  }
  return changes;
}

export class HistoryPanel {
  constructor({ onUnauthorized }) {
    this.onUnauthorized = onUnauthorized;
    this.list = $("#history-list");
    this.more = $("#history-more");
    this.next = null;
    this.carry = null;
    this.more.addEventListener("click", () => this.load(this.next));
    store.onConfig(() => {
      if (!this.list.hidden && this.loaded && this.newest !== store.config.version) this.load();
    });
  }

  async load(before = null) {
    const message = $("#history-message");
    show(message);
    let items;
    try {
      ({ items } = (await call("/config/history", { query: { limit: PAGE + 1, before } })).data);
    } catch (error) {
      if (error instanceof ApiError && error.unauthorized) this.onUnauthorized(error);
      show(message, `The history could not be read: ${error.message}`);
      return;
    }
    if (before === null) {
      this.list.replaceChildren();
      this.newest = items[0]?.version;
    }
    this.loaded = true;
    const shown = items.slice(0, PAGE);
    shown.forEach((item, index) => this.list.append(this.entry(item, items[index + 1])));
    this.next = items.length > PAGE ? shown[shown.length - 1].version : null;
    this.more.hidden = this.next === null;
  }

  entry(item, previous) {
    const active = store.config && item.version === store.config.version;
    const changes = diff(item, previous);
    let summary;
    if (!previous && item.version === 1) summary = h("p", { class: "muted" }, "The first version.");
    else if (!changes.length) summary = h("p", { class: "muted" }, "No value changed.");
    else {
      summary = h("ul", { class: "diff" }, changes.map((change) =>
        h("li", {}, h("code", {}, change.name), ": ",
          h("del", {}, text(change.before)), h("span", { "aria-hidden": "true" }, " → "),
          h("span", { class: "visually-hidden" }, " changed to "), h("ins", {}, text(change.after)))));
    }
    return h("li", { class: "version", id: `version-${item.version}`, "data-version": item.version },
      h("div", { class: "version-head" },
        h("h3", {}, `Version ${item.version}`),
        active ? h("span", { class: "badge good" }, "active") : null,
        h("span", { class: "muted" }, when(item.created_at))),
      byline(item.actor),
      h("p", { class: "comment" }, item.comment ? item.comment : h("span", { class: "muted" }, "no comment")),
      summary,
      active ? null : h("button", {
        type: "button", class: "secondary needs-operator", onclick: () => this.rollback(item),
        "aria-label": `Roll back to version ${item.version}`,
      }, "Roll back to this version"));
  }

  async rollback(item) {
    const active = store.config?.version;
    const answer = await confirmDialog({
      title: `Roll back to version ${item.version}?`,
      message: `Its values become active again as a new version (now active: version ${active}). Every instance serves it within a second.`,
      comment: `rollback to version ${item.version}`,
    });
    if (!answer) return;
    const message = $("#history-message");
    message.classList.remove("ok");
    try {
      const { data } = await call(`/config/rollback/${item.version}`, {
        method: "POST", ifMatch: active, body: { comment: answer.comment || null },
      });
      store.setConfig(data);
      await this.load();
      message.classList.add("ok");
      show(message, `Rolled back: version ${data.version} has the values of version ${item.version}.`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.unauthorized) this.onUnauthorized(error);
      await this.load();
      show(message, error.status === 412
        ? "412: someone else changed the configuration meanwhile; nothing was rolled back. The list now shows the newest versions."
        : `Not rolled back: ${error.message}`);
    }
  }
}
