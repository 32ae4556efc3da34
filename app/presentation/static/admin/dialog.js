// One modal confirmation (<dialog>: focus is trapped and Esc cancels, from the browser).

import { $ } from "./dom.js";

export function confirmDialog({ title, message, comment = null, confirm = "Confirm" }) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = message;
  $("#confirm-ok").textContent = confirm;
  const field = $("#confirm-comment-field");
  field.hidden = comment === null;
  $("#confirm-comment").value = comment ?? "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? { comment: $("#confirm-comment").value.trim() } : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (comment === null ? $("#confirm-cancel") : $("#confirm-comment")).focus();
  });
}
