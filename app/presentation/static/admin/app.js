// The admin console: sign in, then four panels over the admin API of this instance.

import { ApiError, call, token } from "./api.js";
import { $, show } from "./dom.js";
import { ChangePanel } from "./change.js";
import { HistoryPanel } from "./history.js";
import { LimitsPanel } from "./limits.js";
import { NowPanel } from "./now.js";
import { store } from "./store.js";

const PANELS = ["now", "change", "history", "limits"];

function describeRefusal(error) {
  if (error.status === 401) return `401 Unauthorized: ${error.problem.detail || "send an admin token."}`;
  if (error.status === 403) return "403 Forbidden: the server does not accept this admin token.";
  return error.message;
}

function signOut(reason = "") {
  token.clear();
  now.stop();
  store.reset();
  $("#console").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  show($("#sign-in-error"), reason);
  $("#token").value = "";
  $("#token").focus();
}

function onUnauthorized(error) {
  signOut(`Signed out: ${describeRefusal(error)}`);
}

const now = new NowPanel({ onUnauthorized });
const change = new ChangePanel({ onUnauthorized, onSaved: () => historyPanel.load() });
const historyPanel = new HistoryPanel({ onUnauthorized });
const limits = new LimitsPanel({ onUnauthorized });

function selectPanel(name) {
  const panel = PANELS.includes(name) ? name : "now";
  for (const other of PANELS) {
    $(`#panel-${other}`).hidden = other !== panel;
    const link = $(`a[data-panel="${other}"]`);
    if (other === panel) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (panel === "change") change.load();
  if (panel === "history") historyPanel.load();
  if (panel === "limits") limits.load();
}

async function enter() {
  $("#sign-in").hidden = true;
  $("#console").hidden = false;
  $("#sign-out").hidden = false;
  now.start();
  selectPanel(location.hash.slice(1));
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#token");
  const candidate = input.value.trim();
  const error = $("#sign-in-error");
  show(error);
  if (!candidate) {
    show(error, "Enter the admin token.");
    input.focus();
    return;
  }
  try {
    // Any admin read proves the token; nothing is stored before the server accepts it.
    await call("/config/history", { query: { limit: 1 }, as: candidate });
  } catch (refused) {
    if (!(refused instanceof ApiError)) throw refused;
    show(error, describeRefusal(refused));
    input.select();
    return;
  }
  input.value = "";
  token.set(candidate);
  await enter();
}

function init() {
  $("#instance").textContent = location.host;
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => {
    if (!$("#console").hidden) selectPanel(location.hash.slice(1));
  });
  if (token.get()) enter();
  else {
    $("#sign-in").hidden = false;
    $("#token").focus();
  }
}

init();
