// The local web view: one page, four views (#site, #alarms, #entry, #gateway) and a
// trend per channel (#trend/<channel>). The daemon sends its snapshot every second
// over server-sent events; nothing is loaded from outside the gateway.
"use strict";

let messages = {};
let snap = null;
let lastSnapAt = 0;
let trendData = null;
let live = null;
let pressing = false;  // a finger is on the screen: a re-render now would swallow its tap

const _ = (text) => messages[text] || text;  // marked for Babel's extractor (make i18n)
const fmt = (text, args) => text.replace(/\{(\w+)\}/g, (m, k) => (k in args ? args[k] : m));
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) node.append(c);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// --- words -------------------------------------------------------------------------

const QUALITY = {
  good: _("good"), out_of_range: _("out of range"), stale: _("stale"), not_ready: _("warming up"),
  device_fault: _("device fault"), bad: _("bad reading"), comm_lost: _("no communication"),
};
const STATE = {
  unacknowledged: _("unacknowledged"), acknowledged: _("acknowledged"),
  returned_unacknowledged: _("returned, unacknowledged"), latched: _("latched"),
  awaiting_handling: _("awaiting handling"), "ended, unacknowledged": _("ended, unacknowledged"),
  active: _("entry in progress"), retest_required: _("retest required"),
  evacuate: _("evacuate"), ended: _("ended"), expired: _("expired"),
};
const CLASS = { alarm: _("alarm"), fault: _("fault"), anomaly: _("anomaly") };

function levelName(level) {
  return level === 1 ? _("Level 1 alarm") : level >= 2 ? _("Level 2 alarm") : _("Alarm");
}

function ago(ms) {
  const min = Math.floor(ms / 60000);
  if (min < 1) return _("just now");
  if (min < 120) return fmt(_("{n} min ago"), { n: min });
  return fmt(_("{n} h ago"), { n: Math.floor(min / 60) });
}

function within(ms) {
  const min = Math.max(0, Math.round(ms / 60000));
  return min < 120 ? fmt(_("in {n} min"), { n: min }) : fmt(_("in {n} h"), { n: Math.round(min / 60) });
}

const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString("en-GB") : "–");  // 24 h
const number = (v) => (v == null ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));

// --- the live link ---------------------------------------------------------------

function connect() {
  live = new EventSource("/api/live");
  live.addEventListener("snapshot", (e) => {
    snap = JSON.parse(e.data);
    lastSnapAt = Date.now();
    if (!pressing) render();
  });
  live.onerror = () => {
    if (live.readyState === EventSource.CLOSED) setTimeout(connect, 3000);  // e.g. busy (503)
  };
}

function showConnection() {
  const lost = Date.now() - lastSnapAt > 4000;
  $("conn").hidden = !lost;
  $("conn").textContent = snap
    ? fmt(_("Connection lost: values are from {t} and not live"), { t: clock(snap.now_ms) })
    : _("Connecting to the gateway…");
  document.body.classList.toggle("offline", lost);
}

// --- views -------------------------------------------------------------------------

function channelState(c) {
  const shelved = (snap.alarms || []).some((a) => a.suppressed && a.key.startsWith(c.ch + ":"));
  const oos = c.ch in ((snap.health.protection || {}).out_of_service || {});
  const open = (snap.alarms || []).filter((a) => a.key.startsWith(c.ch + ":") && a.class === "alarm");
  const unacked = open.some((a) => !a.acknowledged);
  if (oos) return { cls: "shelved", text: _("Out of service") };
  if (shelved) return { cls: "shelved", text: _("Shelved") };
  if (c.alarm === "alarm") {
    return { cls: `alarm level${c.level}${unacked ? " unacked" : ""}`, text: levelName(c.level) };
  }
  if (c.alarm === "fault" || c.q !== "good") return { cls: "fault", text: _("Fault") };
  return { cls: "normal", text: _("Normal") };
}

function tile(c, withDevice) {
  const state = channelState(c);
  const [device, ...value] = c.ch.split(".");
  return el("a", { class: `tile ${state.cls}`, href: `#trend/${encodeURIComponent(c.ch)}`,
                   "data-channel": c.ch },
    el("div", { class: "name" }, withDevice ? `${device} · ${value.join(".")}` : value.join(".")),
    el("div", {}, el("span", { class: "value" }, number(c.v)), el("span", { class: "unit" }, c.u)),
    el("div", { class: "state" }, state.text,
       c.q !== "good" ? ` · ${QUALITY[c.q] || c.q}` : ""));
}

function siteView() {
  return snap.groups.map((g) => {
    const channels = snap.channels.filter((c) => g.devices.some((d) => c.ch.startsWith(d + ".")));
    if (!channels.length) return null;
    const title = g.space ? fmt(_("Confined space {name}"), { name: g.space })
                          : fmt(_("Zone {name}"), { name: g.device });
    return el("section", { "data-group": g.space || g.device }, el("h2", {}, title),
              el("div", { class: "tiles" }, channels.map((c) => tile(c, g.devices.length > 1))));
  });
}

function alarmsView() {
  const rows = (snap.alarms || []).map((a) => el("tr", { "data-key": a.key },
    el("td", {}, clock(a.raised_ms)),
    el("td", { class: "key" }, a.key),
    el("td", {}, a.class === "alarm" ? levelName(a.level) : CLASS[a.class] || a.class),
    el("td", { class: "state" }, el("span", {}, STATE[a.state] || a.state),
       a.suppressed ? " · " + (a.suppressed === "shelved" ? _("Shelved") : _("Out of service")) : ""),
    el("td", {}, a.state.includes("unacknowledged") ? el("button", {
      class: "primary ack", onclick: () => ask("ack-alarm", _("Acknowledge alarm"), a.key,
                                               { key: a.key }),
    }, _("Acknowledge")) : "")));
  return el("section", {}, el("h2", {}, _("Alarms")), rows.length
    ? el("table", {}, el("tr", {}, [_("Raised"), _("Alarm"), _("Kind"), _("State"), ""]
      .map((h) => el("th", {}, h))), rows)
    : el("p", { class: "muted" }, _("No open alarms.")));
}

function entryView() {
  if (!snap.entry.length) return el("section", {}, el("p", { class: "muted" }, _("No confined spaces in this site's config.")));
  return snap.entry.map((e) => {
    const s = e.session;
    const test = e.last_test;
    const facts = [
      [_("State"), s ? STATE[s.state] || s.state : _("no entry")],
      [_("Pre-entry test"), test ? (test.passed ? _("passed") : _("failed")) + ", " + ago(snap.now_ms - test.ts) : _("none")],
    ];
    if (s && s.state === "active") {
      facts.push([_("Entry started"), `${clock(s.started_ms)} (${s.by})`]);
      facts.push([_("Next record"), within(s.next_record_ms - snap.now_ms)]);
    }
    const act = (name, label) => el("button", { onclick: () => ask(name, label, e.space, { space: e.space }) }, label);
    return el("section", { "data-space": e.space },
      el("h2", {}, fmt(_("Confined space {name}"), { name: e.space })),
      el("dl", {}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("p", {}, act("entry-test", _("Pre-entry test")), " ",
         s && s.state !== "ended" ? act("entry-end", _("End entry")) : act("entry-start", _("Start entry"))));
  });
}

function gatewayView() {
  const h = snap.health;
  const up = snap.uplink;
  const b = snap.buffer;
  const dl = (pairs) => el("dl", {}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  return [
    el("section", {}, el("h2", {}, _("Uplink")), dl([
      [_("Platform connection"), up.connected ? _("connected") : _("not connected")],
      [_("Broker"), up.broker || "–"], [_("Failovers"), up.failovers],
      [_("Waiting for the broker"), up.unacknowledged]])),
    el("section", {}, el("h2", {}, _("Buffer")), dl([
      [_("Events waiting"), b.events], [_("Samples waiting"), b.samples],
      [_("Oldest waiting"), b.oldest_ms ? ago(snap.now_ms - b.oldest_ms) : "–"],
      [_("Samples dropped"), b.evicted + b.expired]])),
    el("section", {}, el("h2", {}, _("Buses")), el("table", {},
      el("tr", {}, [_("Bus"), _("Transactions"), _("Success"), _("Round trip")].map((t) => el("th", {}, t))),
      Object.entries(h.buses).map(([name, s]) => el("tr", {}, el("td", {}, name),
        el("td", {}, s.transactions), el("td", {}, s.success_rate == null ? "–" : `${(100 * s.success_rate).toFixed(1)} %`),
        el("td", {}, s.rtt_mean_ms == null ? "–" : `${s.rtt_mean_ms} ms`))))),
    el("section", {}, el("h2", {}, _("Gateway")), dl([
      [_("Gateway"), snap.gateway], [_("Version"), snap.version],
      [_("Running for"), h.uptime_s < 7200 ? fmt(_("{n} min"), { n: Math.floor(h.uptime_s / 60) })
        : fmt(_("{n} h"), { n: Math.floor(h.uptime_s / 3600) })],
      [_("Alarm core"), h.jit.compiled ? _("compiled") : _("running without its compiler: slower")],
      [_("Memory"), `${Math.round(h.rss_bytes / 1048576)} MB`]])),
  ];
}

// --- the trend plot ------------------------------------------------------------------

async function loadTrend(channel) {
  const r = await fetch(`/api/trend?ch=${encodeURIComponent(channel)}`);
  trendData = r.ok ? await r.json() : { channel, missing: true };
  trendData.live = [];
  trendData.loadedAt = Date.now();
  render();
}

function trendView(channel) {
  if (!trendData || trendData.channel !== channel) {
    trendData = { channel, points: [], live: [], limits: [], loadedAt: 0 };
  }
  if (Date.now() - trendData.loadedAt > 30000) {  // the buffer's buckets, every 30 s
    trendData.loadedAt = Date.now();  // one request at a time
    loadTrend(channel).catch(() => { trendData.loadedAt = 0; });  // again at the next update
  }
  const c = snap.channels.find((x) => x.ch === channel);
  if (c && (!trendData.live.length || trendData.live[trendData.live.length - 1][0] !== c.ts)) {
    trendData.live.push([c.ts, c.v]);
  }
  const title = el("h2", {}, fmt(_("Trend of {channel}, last hour"), { channel }));
  if (trendData.missing) return el("section", {}, title, el("p", { class: "error" }, _("No such channel.")));
  return el("section", {}, title, plot(trendData, c), el("p", { class: "muted" },
    _("Band: lowest to highest in each 10 s; shaded: in alarm; dashed: alarm levels.")),
    el("p", {}, el("a", { href: "#site" }, _("Back to the site"))));
}

function plot(t, current) {
  const W = 600, H = 260, L = 44, R = 8, T = 10, B = 24;
  // The last hour, or less while there is less: never under 10 minutes.
  const now = snap.now_ms;
  const first = Math.min(...t.points.map((p) => p[0]), ...t.live.map((p) => p[0]), now);
  const from = Math.max(now - 3600000, Math.min(first, now - 600000));
  const values = [...t.points.flatMap((p) => [p[1], p[2]]), ...t.live.map((p) => p[1]),
                  ...t.limits.map((l) => l.setpoint)].filter((v) => v != null);
  let lo = Math.min(0, ...values), hi = Math.max(1, ...values);
  hi += (hi - lo) * 0.08;
  const x = (ms) => L + ((ms - from) / (now - from)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "trend", "data-points": t.points.length + t.live.length });
  for (const p of t.points) {
    if (p[4] > 0) s.append(svg("rect", { class: "episode", x: x(p[0]), y: T, width: Math.max(1, x(p[0] + t.bucket_ms) - x(p[0])), height: H - T - B }));
  }
  if (current && current.alarm === "alarm") s.append(svg("rect", { class: "episode", x: x(now - 10000), y: T, width: x(now) - x(now - 10000), height: H - T - B }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const label = svg("text", { x: 2, y: y(v) + 4 });
    label.textContent = number(v);
    s.append(label);
  }
  for (let i = 4; i >= 0; i--) {
    const m = Math.round(((now - from) / 60000) * (i / 4));
    const label = svg("text", { x: x(now - m * 60000) - (i ? 12 : 20), y: H - 6 });
    label.textContent = m ? `-${m} min` : _("now");
    s.append(label);
  }
  const band = t.points.filter((p) => p[1] != null && p[0] >= from);
  if (band.length) {
    const top = band.map((p) => `${x(p[0])},${y(p[2])}`);
    const bottom = band.slice().reverse().map((p) => `${x(p[0])},${y(p[1])}`);
    s.append(svg("polygon", { class: "band", points: [...top, ...bottom].join(" ") }));
  }
  const line = [...band.map((p) => [p[0], p[3]]), ...t.live.filter((p) => p[1] != null)]
    .sort((a, b) => a[0] - b[0]).map((p) => `${x(p[0])},${y(p[1])}`);
  s.append(svg("polyline", { class: "line", points: line.join(" ") }));
  for (const l of t.limits) {
    s.append(svg("line", { class: `limit${l.level >= 2 ? 2 : 1}`, x1: L, x2: W - R, y1: y(l.setpoint), y2: y(l.setpoint) }));
  }
  return s;
}

// --- acting --------------------------------------------------------------------------

let pending = null;

function ask(action, title, what, fields) {
  pending = { action, fields };
  $("act-title").textContent = title;
  $("act-what").textContent = what;
  $("act-error").textContent = "";
  $("act-pin").value = "";
  $("act").showModal();
}

async function submit(event) {
  event.preventDefault();
  const body = { action: pending.action, pin: $("act-pin").value, by: $("act-by").value, ...pending.fields };
  localStorage.setItem("by", $("act-by").value);
  let reply;
  try {
    const r = await fetch("/api/action", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    reply = await r.json();
  } catch (e) {
    reply = { ok: false, error: { code: "unreachable", message: _("The gateway cannot be reached.") } };
  }
  if (reply.ok) {
    $("act").close();
    return;
  }
  const code = reply.error.code;
  $("act-error").textContent = code === "wrong_pin" ? _("Wrong PIN.")
    : code === "rate_limited" ? _("Too many attempts; wait a minute.")
    : _("Refused:") + " " + reply.error.message;
}

// --- the page ------------------------------------------------------------------------

const TABS = [["site", _("Site")], ["alarms", _("Alarms")], ["entry", _("Entry")], ["gateway", _("Gateway")]];

function render() {
  showConnection();
  const [view, arg] = (location.hash.slice(1) || "site").split("/");
  const open = snap ? (snap.alarms || []).filter((a) => a.state.includes("unacknowledged")).length : 0;
  $("tabs").replaceChildren(...TABS.map(([id, label]) => el("a", { href: `#${id}`, class: view === id ? "on" : "", "data-tab": id },
    label, id === "alarms" && open ? el("span", { class: "count" }, String(open)) : null)));
  if (!snap) return;
  $("site-name").textContent = `${snap.site} · ${snap.gateway}`;
  const protection = snap.health.protection || {};
  const off = Object.keys(protection.shelved || {}).length + Object.keys(protection.out_of_service || {}).length;
  $("protect").hidden = snap.health.jit.compiled && !off;
  $("protect").textContent = !snap.health.jit.compiled ? _("The alarm core runs without its compiler.")
    : fmt(_("Not fully protecting: {n} shelved or out of service"), { n: off });
  const body = view === "alarms" ? alarmsView() : view === "entry" ? entryView()
    : view === "gateway" ? gatewayView() : view === "trend" ? trendView(decodeURIComponent(arg || ""))
    : siteView();
  $("view").replaceChildren(...[body].flat().filter(Boolean));
}

async function start() {
  const wanted = new URLSearchParams(location.search).get("lang") || localStorage.getItem("lang") || "";
  const i18n = await (await fetch(`/api/i18n?lang=${encodeURIComponent(wanted)}`)).json();
  messages = i18n.messages;
  relabel();
  document.documentElement.lang = i18n.lang === "zh_CN" ? "zh-CN" : "en";
  const names = { en: "English", zh_CN: "中文" };
  $("lang").replaceChildren(...i18n.languages.map((l) => el("option", { value: l }, names[l] || l)));
  $("lang").value = i18n.lang;
  $("lang").addEventListener("change", () => {
    localStorage.setItem("lang", $("lang").value);
    location.search = `?lang=${$("lang").value}`;
  });
  $("act-by").value = localStorage.getItem("by") || "";
  $("act-by-label").textContent = _("Your name");
  $("act-pin-label").textContent = _("Technician PIN");
  $("act-cancel").textContent = _("Cancel");
  $("act-ok").textContent = _("Confirm");
  $("act-cancel").addEventListener("click", () => $("act").close());
  $("act-form").addEventListener("submit", submit);
  window.addEventListener("hashchange", render);
  document.addEventListener("pointerdown", () => { pressing = true; });
  for (const type of ["pointerup", "pointercancel"]) {
    document.addEventListener(type, () => setTimeout(() => { pressing = false; }, 300));
  }
  setInterval(showConnection, 1000);
  connect();
  render();
}

function relabel() {
  // The word tables above were made before the catalog arrived: make them again.
  for (const table of [QUALITY, STATE, CLASS]) for (const k of Object.keys(table)) table[k] = _(table[k]);
  TABS.forEach((t) => { t[1] = _(t[1]); });
}

start();
