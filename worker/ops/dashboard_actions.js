// The dashboard's actions (worker/ops/dashboard_actions.py), loaded by dashboard.html. Nothing here
// runs unless /api/me says the signed-in user may act (an operator); the server checks that again
// on every POST. Each action asks for a confirmation in the page first, then posts JSON with the
// X-Dashboard-Request header (worker/ops/dashboard_auth.py: cross_site_refusal).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let pending = null;

  function button(label, cls, onClick) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = label; b.className = "act " + (cls || "");
    b.addEventListener("click", onClick); return b;
  }
  function field(id, placeholder, size) {
    const input = document.createElement("input");
    input.id = id; input.placeholder = placeholder; input.size = size || 16; return input;
  }
  function show(message, ok) {
    const p = $("action-result"); p.hidden = false; p.textContent = message;
    p.className = ok ? "action-ok" : "error";
  }
  async function post(action, body) {
    const response = await fetch("api/actions/" + action, {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Dashboard-Request": "1"},
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({error: response.statusText}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }
  // Ask first: the dialog names the action and its target; "confirm" posts it.
  function confirmThen(question, action, body) {
    pending = {action, body};
    $("confirm-text").textContent = question;
    $("confirm").hidden = false;
    $("confirm-yes").focus();
  }
  async function confirmed() {
    const job = pending; pending = null; $("confirm").hidden = true;
    if (!job) return;
    try {
      const data = await post(job.action, job.body);
      show(job.action + " " + (data.target || "") + ": " + JSON.stringify(data.result), true);
    } catch (err) {
      show(job.action + " refused: " + err.message, false);
    }
    if (window.refreshDashboard) window.refreshDashboard();
  }
  function dialog() {
    const box = document.createElement("div");
    box.id = "confirm"; box.hidden = true; box.setAttribute("role", "dialog");
    const text = document.createElement("p"); text.id = "confirm-text";
    const yes = button("Confirm", "danger", confirmed); yes.id = "confirm-yes";
    const no = button("Cancel", "", () => { pending = null; box.hidden = true; });
    no.id = "confirm-no";
    box.append(text, yes, no); document.body.appendChild(box);
  }
  function controls() {
    const flow = $("flow-controls");
    const name = field("pause-name", "job name");
    flow.append(name,
      button("Pause", "", () => name.value && confirmThen("Pause job name " + name.value + "?",
        "pause", {names: [name.value]})),
      button("Pause the whole queue", "danger", () => confirmThen(
        "Pause the whole queue (nothing is claimed)?", "pause", {all: true})));
    const limit = field("limit-name", "limit name"); const max = field("limit-max", "max", 5);
    const rate = field("limit-rate", "rate", 5); const per = field("limit-per", "per s", 5);
    flow.append(limit, max, rate, per, button("Set limit", "", () => {
      const body = {name: limit.value};
      if (max.value !== "") body.max = Number(max.value);
      if (rate.value !== "") { body.rate = Number(rate.value); body.per = Number(per.value); }
      confirmThen("Set limit " + limit.value + " to " + JSON.stringify(body) + "?",
        "limit-set", body);
    }));
    const letters = $("dead-letter-controls");
    const before = field("letters-before", "failed before (ISO 8601)", 26);
    letters.append(before,
      button("Replay matching", "", () => confirmThen("Replay every dead letter not yet " +
        "replayed" + (before.value ? " that failed before " + before.value : "") + "?",
        "replay", before.value ? {before: before.value} : {all: true})),
      button("Purge matching", "danger", () => confirmThen("Delete every dead letter" +
        (before.value ? " that failed before " + before.value : "") + "?", "purge",
        before.value ? {before: before.value} : {all: true})));
    for (const table of ["in-progress", "failures", "dead-letters", "flow-limits"]) {
      const th = document.createElement("th"); th.textContent = "actions";
      $(table).tHead.rows[0].appendChild(th);
    }
  }
  // After each refresh: a button cell on every row that can be acted on.
  function rowButtons(tableId, items, make) {
    const rows = $(tableId).tBodies[0].rows;
    items.forEach((item, i) => {
      if (!rows[i] || rows[i].cells.length === 1) return;
      const td = document.createElement("td");
      for (const b of make(item)) td.appendChild(b);
      rows[i].appendChild(td);
    });
  }
  function decorate(d) {
    rowButtons("in-progress", d.in_progress, (j) => [button("Abort", "danger", () =>
      confirmThen("Abort job " + j.job_id + " (" + j.function + ")?", "abort",
        {job_id: j.job_id}))]);
    rowButtons("failures", d.failures, (f) => f.outcome !== "failed" ? [] : [button("Retry", "",
      () => confirmThen("Retry job " + f.job_id + " (replay its dead letter)?", "retry",
        {job_id: f.job_id}))]);
    if (!("error" in d.dead_letters)) {
      rowButtons("dead-letters", d.dead_letters.recent, (l) => [
        button("Replay", "", () => confirmThen("Replay dead letter " + l.id + " (job " +
          l.job_id + ")?", "replay", {id: l.id})),
        button("Purge", "danger", () => confirmThen("Delete dead letter " + l.id + "?", "purge",
          {id: l.id}))]);
    }
    rowButtons("flow-limits", d.flow.limits, (l) => !l.override ? [] : [button("Clear", "",
      () => confirmThen("Clear limit " + l.name + "'s run-time value?", "limit-clear",
        {name: l.name}))]);
    const paused = $("flow-resume"); paused.replaceChildren();
    for (const n of d.flow.paused) {
      paused.appendChild(button("Resume " + (n === "*" ? "the whole queue" : n), "", () =>
        confirmThen("Resume " + (n === "*" ? "the whole queue" : "job name " + n) + "?",
          "resume", n === "*" ? {all: true} : {names: [n]})));
    }
  }
  window.enableActions = function (me) {
    if (!me.can_act) return;
    dialog(); controls(); window.afterRender = decorate;
    document.body.dataset.operator = "1";
  };
})();
