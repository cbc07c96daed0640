// lifeboat console: plain script, no framework, no build step. It calls the
// agent's own API with the session cookie; every request that may change
// something carries the session's CSRF token.
"use strict";

const $ = (sel) => document.querySelector(sel);
let session = null;        // {name, role, csrf, node}
let status = null;         // the last /ui/overview
let refreshTimer = null;
let events = null;         // the EventSource
const roles = { read: 1, operate: 2, admin: 3 };

function can(role) { return session && roles[session.role] >= roles[role]; }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

async function call(method, path, body, csrf) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") {
    opts.headers["X-CSRF-Token"] = csrf !== undefined ? csrf : session ? session.csrf : "";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    const msg = (data && data.error) || text || r.statusText;
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return data;
}

function show(signedIn) {
  $("#signin").hidden = signedIn;
  $("#console").hidden = !signedIn;
  $("#signout").hidden = !signedIn;
  $("#who").textContent = signedIn ? `${session.name} (${session.role}) on ${session.node}` : "";
  if (!signedIn) $("#token").focus();
}

async function start() {
  try {
    session = await call("GET", "/ui/session");
  } catch (e) {
    session = null;
  }
  if (!session || !session.name) {
    session = null;
    show(false);
    return;
  }
  show(true);
  await refresh();
  follow();
  $("#doctor-run").click(); // findings worst first, once at sign-in
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#signin-error").textContent = "";
  try {
    session = await call("POST", "/ui/login", { token: $("#token").value });
    $("#token").value = "";
    await start();
  } catch (e) {
    $("#signin-error").textContent = e.status === 401 ? "That token is not known to this agent." : e.message;
  }
});

$("#signout").addEventListener("click", async () => {
  // The stream and the refreshes stop first: an event arriving while the
  // sign-out is under way would refresh with a session already ended.
  if (events) { events.close(); events = null; }
  clearTimeout(refreshTimer);
  const csrf = session ? session.csrf : "";
  session = null;
  try { await call("POST", "/ui/logout", undefined, csrf); } catch (_) { /* signed out anyway */ }
  show(false);
});

function scheduleRefresh(delay) {
  clearTimeout(refreshTimer);
  if (session) refreshTimer = setTimeout(refresh, delay);
}

async function refresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  try {
    status = await call("GET", "/ui/overview");
    render();
    finishMoves();
  } catch (e) {
    if (e.status === 401) { session = null; show(false); return; }
    $("#summary").textContent = "Cannot reach the agent: " + e.message;
  }
  scheduleRefresh(5000); // the stream wakes it sooner
}

function holdText(h) { return h ? " (" + [h.by, h.reason].filter(Boolean).join(": ") + ")" : ""; }

function render() {
  const st = status.status;
  const sum = $("#summary");
  sum.textContent = status.summary;
  sum.className = status.ready ? "ok" : "bad";
  $("#cluster").textContent = `Leader ${st.leader || "NONE (no quorum?)"} · raft index ${st.index} · feature level ${st.feature_level}` +
    (st.maintenance ? " · the whole cluster is in MAINTENANCE" + holdText(st.maintenance) : "") + ` · answered by ${st.node}`;

  const nb = $("#nodes tbody");
  nb.replaceChildren();
  for (const n of st.nodes || []) {
    let state = n.state;
    if (n.fenced) state += " (fenced)";
    if (n.maintenance) state += " (maintenance)";
    if (n.standby) state += " (standby)";
    const role = n.leader ? "leader" : n.witness ? "witness" : "voter";
    const f = n.findings;
    const doc = !f ? "-" : (f.critical || f.warning) ? `${f.critical || 0} critical, ${f.warning || 0} warning` : "ok";
    const acts = el("td", { class: "act" });
    if (can("operate") && !n.witness) {
      if (n.standby) acts.append(el("button", { type: "button", "data-action": "unstandby", "data-node": n.name, onclick: () => act("POST", `/v1/nodes/${enc(n.name)}/unstandby`, {}, `${n.name} out of standby`) }, "Unstandby"));
      else acts.append(el("button", { type: "button", "data-action": "standby", "data-node": n.name, onclick: () => act("POST", `/v1/nodes/${enc(n.name)}/standby`, { reason: "console" }, `${n.name} in standby`) }, "Standby"));
      const on = !n.maintenance;
      acts.append(el("button", { type: "button", "data-action": "maintenance", "data-node": n.name, onclick: () => act("POST", "/v1/maintenance", { scope: "node", name: n.name, on, reason: "console" }, `maintenance ${on ? "on" : "off"} for ${n.name}`) }, on ? "Maintenance on" : "Maintenance off"));
    }
    nb.append(el("tr", { "data-node": n.name },
      el("td", {}, n.name), el("td", { class: n.state === "alive" ? "" : "bad" }, state), el("td", {}, role),
      el("td", {}, n.version || "-"), el("td", {}, n.lease || "-"), el("td", { class: doc === "ok" || doc === "-" ? "" : "warn" }, doc), acts));
  }

  const hb = $("#hierarchies tbody");
  hb.replaceChildren();
  for (const h of st.hierarchies || []) {
    const rd = [];
    for (const n of h.nodes || []) {
      const x = (h.readiness || {})[n];
      if (!x || n === h.owner) continue;
      rd.push(x.ready ? `${n} READY` : `${n} NOT READY (${(x.missing && x.missing.length) ? "missing " + x.missing.join(", ") : x.reason || "?"})`);
    }
    const res = [];
    for (const [node, rs] of Object.entries(h.resources || {})) {
      res.push(`${node === h.owner ? "*" : ""}${node}: ` + Object.entries(rs).map(([r, s]) => `${r}=${s}`).join(" "));
    }
    const acts = el("td", { class: "act" });
    if (can("operate")) {
      acts.append(el("button", { type: "button", "data-action": "switchover", "data-hierarchy": h.name, onclick: () => openSwitch(h) }, "Switch over"));
      if (h.state === "stopped") acts.append(el("button", { type: "button", "data-action": "start", onclick: () => act("POST", `/v1/hierarchies/${enc(h.name)}/start`, {}, `start ${h.name}`) }, "Start"));
      else acts.append(el("button", { type: "button", "data-action": "stop", onclick: () => confirm(`Stop ${h.name}? It goes out of service.`) && act("POST", `/v1/hierarchies/${enc(h.name)}/stop`, {}, `stop ${h.name}`) }, "Stop"));
      const on = !h.maintenance;
      acts.append(el("button", { type: "button", "data-action": "maintenance", onclick: () => act("POST", "/v1/maintenance", { scope: "hierarchy", name: h.name, on, reason: "console" }, `maintenance ${on ? "on" : "off"} for ${h.name}`) }, on ? "Maintenance on" : "Maintenance off"));
    }
    hb.append(el("tr", { "data-hierarchy": h.name },
      el("td", {}, h.name), el("td", { class: "owner" }, h.owner || "-"), el("td", { class: h.online ? "ok" : "bad" }, h.state),
      el("td", {}, h.epoch), el("td", {}, rd.join("; ") || "-"), el("td", {}, res.join(" · ") || "-"),
      el("td", {}, h.maintenance ? h.maintenance + ": unmanaged" : h.reason || ""), acts));
  }
}

function enc(s) { return encodeURIComponent(s); }

async function act(method, path, body, what) {
  const out = $("#action-result");
  out.className = "";
  out.textContent = what + " ...";
  try {
    await call(method, path, body);
    out.textContent = what + ": done";
    out.className = "ok";
  } catch (e) {
    out.textContent = what + ": refused: " + e.message;
    out.className = "error";
  }
  refresh();
}

let switching = null;
function openSwitch(h) {
  switching = h;
  $("#switch-name").textContent = h.name;
  const sel = $("#switch-to");
  sel.replaceChildren();
  for (const n of h.nodes || []) {
    if (n !== h.owner) sel.append(el("option", { value: n }, n));
  }
  showReadiness();
  $("#switch-dialog").showModal();
}
function showReadiness() {
  const n = $("#switch-to").value;
  const x = switching && (switching.readiness || {})[n];
  const p = $("#switch-ready");
  if (!x) { p.textContent = `${n}: readiness not proven yet`; p.className = "warn"; return; }
  p.textContent = x.ready ? `${n} is READY to take ${switching.name}` : `${n} is NOT READY: ${(x.missing && x.missing.length) ? "missing " + x.missing.join(", ") : x.reason}`;
  p.className = x.ready ? "ok" : "bad";
}
$("#switch-to").addEventListener("change", showReadiness);
$("#switch-dialog").addEventListener("close", () => {
  if ($("#switch-dialog").returnValue === "confirm" && switching) {
    const to = $("#switch-to").value;
    act("POST", `/v1/hierarchies/${enc(switching.name)}/switchover`, { to }, `switch ${switching.name} over to ${to}`);
  }
  switching = null;
});

$("#doctor-run").addEventListener("click", async () => {
  $("#doctor-state").textContent = "running on every node ...";
  try {
    const rep = await call("GET", "/v1/doctor");
    const all = [];
    for (const n of rep.nodes || []) for (const f of n.findings || []) all.push(f);
    const rank = { critical: 0, warning: 1, info: 2 };
    all.sort((a, b) => rank[a.severity] - rank[b.severity]);
    const ul = $("#findings");
    ul.replaceChildren();
    for (const f of all) {
      ul.append(el("li", { class: f.severity === "critical" ? "bad" : f.severity === "warning" ? "warn" : "" },
        `${f.severity.toUpperCase()} ${f.node} ${f.id}${f.hierarchy ? " " + f.hierarchy : ""}: ${f.seen}`, f.fix ? el("div", { class: "hint" }, "fix: " + f.fix) : null));
    }
    $("#doctor-state").textContent = `${all.length} findings`;
  } catch (e) {
    $("#doctor-state").textContent = "doctor could not run: " + e.message;
  }
});

// Failovers and switchovers, told in the timeline with how long they took.
// The facts arrive in any order (the stream merges every node's events, and
// the overview may already show the new owner when the leader's "node
// failed" event comes in), so they are only recorded here, and
// finishMoves, run after every overview, reports a move once it has all
// of them: the hierarchy online on a new owner, that owner's restore
// ended, and either a switchover asked for or the old owner reported
// failed before that restore ended.
const failures = {};  // node -> times (ms) it was reported failed, the last few
const switches = {};  // hierarchy -> time (ms) a switchover was committed
const restored = {};  // hierarchy -> {t, node}: the last restore that ended
const owners = {};    // hierarchy -> {node, prev, told}: owners seen online

function noteMove(e) {
  const t = new Date(e.time).getTime();
  // A node is reported failed by the failure detector ("node X failed")
  // or fenced once its lease lapsed ("fenced X ..."), whichever the
  // leader saw first: either may come after the restore elsewhere.
  const m = e.kind === "node" && e.action === "failed" ? /node (\S+) failed/.exec(e.message || "")
    : e.kind === "failover" && e.action === "fence" ? /^fenced (\S+)/.exec(e.message || "") : null;
  if (m) {
    const ts = failures[m[1]] || (failures[m[1]] = []);
    if (!ts.includes(t)) { ts.push(t); ts.sort((a, b) => a - b); }
    while (ts.length > 20) ts.shift();
  } else if (e.kind === "switchover" && e.hierarchy) {
    switches[e.hierarchy] = t;
  } else if (e.kind === "action" && e.action === "restore" && e.phase === "end" && !e.error && e.hierarchy) {
    if (!restored[e.hierarchy] || restored[e.hierarchy].t <= t) restored[e.hierarchy] = { t, node: e.node };
  }
}

function finishMoves() {
  for (const h of status.status.hierarchies || []) {
    if (!h.online || !h.owner) continue;
    let o = owners[h.name];
    if (!o) {
      owners[h.name] = { node: h.owner, prev: "", told: true }; // first seen: nothing to tell
      continue;
    }
    if (o.node !== h.owner) o = owners[h.name] = { node: h.owner, prev: o.node, told: false };
    const r = restored[h.name];
    if (o.told || !r || r.node !== h.owner) continue;
    const sw = switches[h.name];
    // The earliest of the reports that came before the restore, one
    // after another (the detector's and the fence, within seconds).
    const before = (failures[o.prev] || []).filter((f) => f <= r.t);
    let failed = before.pop();
    while (before.length && failed - before[before.length - 1] < 10000) failed = before.pop();
    let what, since;
    if (sw !== undefined && sw <= r.t && (failed === undefined || sw >= failed)) {
      what = "switchover"; since = sw;
    } else if (failed !== undefined && r.t - failed < 10 * 60 * 1000) {
      what = "failover"; since = failed;
    } else {
      continue; // the reason may still be on its way
    }
    o.told = true;
    delete switches[h.name];
    timeline({ time: r.t, node: h.owner, kind: what, hierarchy: h.name, action: "done",
      message: `${h.name} in service on ${h.owner}${o.prev ? " (from " + o.prev + ")" : ""} ${r.t - since} ms after ${what === "failover" ? o.prev + " was reported failed" : "the request"}` });
  }
}

function timeline(e) {
  const li = el("li", { "data-kind": e.kind, "data-action": e.action || "", class: e.error ? "error" : e.kind === "failover" ? "warn" : "" },
    `${new Date(e.time).toLocaleTimeString()} ${e.node} ${e.kind}${e.action ? " " + e.action : ""}${e.phase ? " " + e.phase : ""}` +
    `${e.hierarchy ? " " + e.hierarchy : ""}${e.resource ? "/" + e.resource : ""}${e.duration ? " in " + e.duration : ""}` +
    `${e.message ? ": " + e.message : ""}${e.error ? " ERROR " + e.error : ""}${e.by ? " (by " + e.by + ")" : ""}`);
  const ol = $("#timeline");
  ol.prepend(li);
  while (ol.children.length > 300) ol.lastChild.remove();
}

// The stream replays the history first (the nodes' events.jsonl), then
// brings each event as it happens.
function follow() {
  if (events) events.close();
  events = new EventSource("/v1/events?follow=1");
  events.addEventListener("event", (m) => {
    const e = JSON.parse(m.data);
    timeline(e);
    noteMove(e);
    scheduleRefresh(50);
  });
  for (const t of ["unreachable", "reachable", "dropped"]) {
    events.addEventListener(t, (m) => { const n = JSON.parse(m.data); timeline({ time: Date.now(), node: n.node, kind: "stream", action: t, error: n.error }); scheduleRefresh(50); });
  }
}

start();
