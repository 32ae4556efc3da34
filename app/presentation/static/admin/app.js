// The admin console: sign in, then four panels over the admin API of this instance.

import { ApiError, call, token } from "./api.js";
import { $, h, show } from "./dom.js";
import { ChangePanel } from "./change.js";
import { HistoryPanel } from "./history.js";
import { LimitsPanel } from "./limits.js";
import { NowPanel } from "./now.js";
import { store } from "./store.js";

const PANELS = ["now", "change", "history", "limits"];

function describeRefusal(error) {
  if (error.status === 401) return `401 Unauthorized: ${error.problem.detail || "send an admin token."}`;
  if (error.status === 403 && error.code === "forbidden-role") return `403 Forbidden: ${error.problem.detail}`;
  if (error.status === 403) return "403 Forbidden: the server does not accept this admin token.";
  return error.message;
}

// Who is signed in, from GET /whoami: the page shows it, and hides (CSS, by the body's
// data-role) the controls of operations the role may not use. The API refuses them anyway.
function showIdentity(identity) {
  document.body.dataset.role = identity.role;
  const who = $("#who");
  who.replaceChildren(
    "Signed in as ", h("strong", {}, identity.name),
    identity.issuer ? h("span", { class: "muted" }, ` (${identity.issuer})`) : "",
    " · role ", h("span", { class: "badge", id: "who-role" }, identity.role));
  who.hidden = false;
}

function signOut(reason = "") {
  token.clear();
  now.stop();
  store.reset();
  $("#console").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").hidden = true;
  delete document.body.dataset.role;
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

async function enter(identity = null) {
  if (!identity) {
    try {
      identity = (await call("/whoami")).data;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      signOut(`Signed out: ${describeRefusal(error)}`);
      return;
    }
  }
  showIdentity(identity);
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
    show(error, "Enter an admin token or a JWT.");
    input.focus();
    return;
  }
  let identity;
  try {
    // The server names the token's holder and role; nothing is stored before it accepts it.
    identity = (await call("/whoami", { as: candidate })).data;
  } catch (refused) {
    if (!(refused instanceof ApiError)) throw refused;
    show(error, describeRefusal(refused));
    input.select();
    return;
  }
  input.value = "";
  token.set(candidate);
  await enter(identity);
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
