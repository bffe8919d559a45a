"use strict";
// The token comes in the address's fragment (never sent to a server), is kept for this tab
// only, and leaves the address bar at once.
(function () {
  const m = location.hash.match(/[#&]t=([0-9a-f]{64})/);
  if (m) {
    sessionStorage.setItem("kith-token", m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
})();
const token = sessionStorage.getItem("kith-token");
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let x = Number(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i ? x.toFixed(1) : x) + " " + u[i];
}
function when(ms) { return ms ? new Date(Number(ms)).toLocaleString() : "never"; }
function table(head, rows) {
  return el("table", {}, el("tr", {}, head.map((h) => el("th", {}, h))),
    rows.map((r) => el("tr", {}, r.map((c) => typeof c === "number" ? el("td", { class: "num" }, c) : el("td", {}, c)))));
}
function kv(rows) {
  return el("table", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}
function show(id, ...nodes) { const d = $(id); d.replaceChildren(...nodes); }

async function call(request) {
  const r = await fetch("/kith/api/v1/run", {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify(request),
  });
  if (r.status === 401) { $("login").hidden = false; throw new Error("not logged in"); }
  const text = await r.text();
  let v; try { v = JSON.parse(text); } catch { throw new Error(text.trim()); }
  if (v.error) throw new Error(v.error);
  return v.result;
}

let me = null; // this identity's id, from the node's status

function renderNode(s) {
  if (s.error) return show("node", el("p", { class: "error" }, s.error));
  me = s.identity;
  show("node", kv([
    ["node", s.node], ["identity", s.identity], ["version", s.version],
    ["up for", s.uptime_s + " s"], ["addresses", (s.addrs || []).join(", ")],
    ["open at", (s.urls || []).join("  ")],
    ["store", `${s.store.objects} objects, ${s.store.chunks} chunks in ${s.store.packs} packs, ${bytes(s.store.bytes)}`],
    ["peers", s.peers ? `${s.peers.known} known, ${s.peers.reachable} reachable` : ""],
    ["sites", s.gateway ? `${s.gateway.requests} requests, ${s.gateway.cache_hits} from the cache` : ""],
    ["refused", Object.entries(s.refused || {}).map(([k, n]) => `${k}: ${n}`).join("; ") || "nothing"],
  ]));
  const progress = (w) => !w.progress ? ""
    : `${w.progress[0]} / ${w.progress[1]}` + (w.eta_s != null ? `, about ${w.eta_s} s left` : "");
  const ops = s.operations || [];
  show("workers",
    ops.length ? el("div", { id: "operations" }, el("h3", {}, "Under way"),
      table(["operation", "stage", "done", "rate", "time left", "running for"],
        ops.map((o) => [o.what, o.stage || "", o.bytes_total ? `${bytes(o.bytes_done)} of ${bytes(o.bytes_total)}` : bytes(o.bytes_done),
          bytes(o.rate_bps) + "/s", o.eta_s != null ? o.eta_s + " s" : "", o.running_s + " s"]))) : "",
    table(["worker", "state", "passes", "progress", "last pass", "last error"],
      (s.workers || []).map((w) => [w.name, w.state, w.passes, progress(w), when(w.last_ms), w.last_error || ""])));
}
function renderPeers(list) {
  if (list.error) return show("peers", el("p", { class: "error" }, list.error));
  if (!list.length) return show("peers", el("p", { class: "muted" }, "No peers yet: nodes on this LAN appear by themselves."));
  show("peers", table(["node", "state", "round trip", "last seen", "route", "version", "clock"],
    list.map((p) => [p.id.slice(0, 16), p.state, p.rtt_ms != null ? p.rtt_ms + " ms" : "",
      when(p.last_seen_ms), p.route || (p.mdns ? "LAN" : "ticket"), p.version || "",
      p.clock_offset_ms != null ? (p.clock_offset_ms / 1000).toFixed(1) + " s" : ""])));
}
function renderPools(list) {
  if (list.error) return show("pools", el("p", { class: "error" }, list.error));
  if (!list.length) return show("pools", el("p", { class: "muted" }, "This node is in no pool yet."));
  show("pools", table(["pool", "members", "replicas", "storage offered", "your role", ""],
    list.map((p) => [p.name, p.members, p.replicas, bytes(p.offered), p.role || "",
      el("span", {},
        el("button", { class: "act", "data-act": "show", "data-pool": p.name, onclick: () => poolDetail(p.name) }, "show"),
        el("button", { class: "act", "data-act": "invite", "data-pool": p.name, onclick: () => invite(p.name) }, "invite"))])));
}
// A small form: labelled inputs and a button that runs `act(values)`, then `after()`; the
// node's answer (or its refusal, in the CLI's words) shows under it.
function form(label, fields, act, after) {
  const inputs = fields.map(([name, hint]) => el("input", { name, placeholder: hint, size: "14" }));
  const out = el("span", { class: "muted" });
  const go = el("button", { class: "act", onclick: async () => {
    const v = Object.fromEntries(inputs.map((i) => [i.name, i.value.trim()]));
    out.className = "muted"; out.textContent = "…";
    try { await act(v); out.textContent = "done"; if (after) await after(); }
    catch (e) { out.className = "error"; out.textContent = e.message; }
  } }, label);
  return el("p", {}, ...inputs, go, " ", out);
}

async function poolDetail(name) {
  try {
    const d = await call({ op: "pool", pool_op: "show", pool: name });
    const again = () => poolDetail(name);
    // Reputation: the audits every member's nodes passed, of all they underwent.
    const owner = {};
    for (const m of d.members || []) for (const n of m.nodes || []) owner[n.id] = m.id;
    const audited = {};
    for (const a of d.audits || []) {
      const who = owner[a.node]; if (!who) continue;
      const x = audited[who] || (audited[who] = { passed: 0, failed: 0, failing: false });
      x.passed += a.passed; x.failed += a.failed; x.failing = x.failing || a.failing;
    }
    const reputation = (id) => {
      const x = audited[id]; if (!x || !(x.passed + x.failed)) return "not audited yet";
      return `${Math.floor(100 * x.passed / (x.passed + x.failed))}% (${x.passed} of ${x.passed + x.failed})` + (x.failing ? ", failing now" : "");
    };
    const rows = (d.members || []).map((m) =>
      [m.name || m.id.slice(0, 16), m.role, m.state, bytes((m.nodes || []).reduce((a, n) => a + n.storage, 0)), reputation(m.id),
        m.state === "active" && m.id !== me
          ? el("button", { class: "act", onclick: async () => {
              if (!confirm(`Remove ${m.name || m.id.slice(0, 16)} from ${name}?`)) return;
              try { await call({ op: "pool", pool_op: "remove", pool: name, member: m.id }); await again(); }
              catch (e) { alert(e.message); }
            } }, "remove")
          : ""]);
    const r = d.replication || {};
    show("pool", el("h3", {}, "Pool " + name),
      table(["member", "role", "state", "offers", "audits passed", ""], rows),
      form("offer storage", [["storage", "size, e.g. 50GiB"]],
        (v) => call({ op: "pool", pool_op: "offer", pool: name, storage: v.storage, egress: null, zone: null }), again),
      form("set", [["key", "e.g. replicas"], ["value", "e.g. 3"]],
        (v) => call({ op: "pool", pool_op: "set", pool: name, key: v.key, value: v.value }), again),
      kv([
        ["objects", r.objects ?? ""], ["bytes", bytes(r.bytes)],
        ["under-replicated", `${bytes(r.under_replicated_bytes)} (${r.under_replicated_blobs ?? 0} blobs)`],
        ["lost blobs", r.lost_blobs ?? ""],
        ["holders", table(["node", "member", "state", "silent for", "assigned", "confirmed"],
          (r.holders || []).map((h) => [h.node.slice(0, 16), h.member || "", h.state, h.silent_s + " s",
            `${bytes(h.assigned_bytes)} in ${h.assigned_blobs} blobs`, `${h.confirmed_blobs} blobs` + (h.error ? ` (${h.error})` : "")]))],
        ["this node's repair", d.repair ? `${d.repair.repaired_blobs} blobs fetched since it started (${bytes(d.repair.repaired_bytes)}); ` +
          `lacks ${d.repair.lacking_blobs} of the ${d.repair.responsible_blobs} it should hold` +
          (d.repair.error ? ` (${d.repair.error})` : "") : "no pass yet"]]));
  } catch (e) { show("pool", el("p", { class: "error" }, e.message)); }
}
// A QR code of `text`, drawn by the node (an <img> of SVG: no script from anywhere else).
async function qr(text) {
  const r = await fetch("/kith/api/v1/qr", {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  if (!r.ok) return el("p", { class: "error" }, (await r.text()).trim());
  const svg = await r.text();
  return el("img", { class: "qr", alt: "QR code", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg) });
}
async function invite(name) {
  try {
    const t = await call({ op: "pool", pool_op: "invite", pool: name, expires: "24h", uses: 1 });
    show("pool", el("h3", {}, "Invite to " + name),
      el("p", {}, "Give this ticket to the new member (valid 24 h, one use); they join with `kith pool join TICKET`, or scan it:"),
      el("div", { class: "ticket", id: "ticket" }, t.ticket), await qr(t.ticket));
  } catch (e) { show("pool", el("p", { class: "error" }, e.message)); }
}
// Pairing a browser: a code (and its page's address as a QR code) that lets a phone's browser
// upload one file into this node's store.
async function pair() {
  try {
    const p = await call({ op: "pair" });
    const url = p.page ? p.page + "#pair=" + p.code : null;
    show("pairing", el("p", {}, "Pairing code ", el("b", { id: "pair-code" }, p.code),
      ` (valid ${Math.round(p.expires_s / 60)} minutes, one upload)` + (url ? ": open or scan " : "")),
      url ? el("p", {}, el("a", { href: url, id: "pair-url" }, url)) : "",
      url ? await qr(url) : "");
  } catch (e) { show("pairing", el("p", { class: "error" }, e.message)); }
}

function open(page) {
  for (const o of document.querySelectorAll("nav button")) {
    if (o.dataset.page === page) o.setAttribute("aria-current", "page"); else o.removeAttribute("aria-current");
  }
  for (const s of document.querySelectorAll("main section")) s.hidden = s.id !== "page-" + page;
}
$("pair").addEventListener("click", pair);
for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => open(b.dataset.page));
}
// `?page=pools` opens a page directly (a bookmark).
const asked = new URLSearchParams(location.search).get("page");
if (asked && document.getElementById("page-" + asked)) open(asked);

function money(cents) { return (Number(cents) / 100).toFixed(2); }

// The statement as CSV, as `kith ledger statement` writes it (fetched with the token, then
// saved by the browser).
async function download(pool, period) {
  const q = new URLSearchParams({ pool, period });
  const r = await fetch("/kith/api/v1/statement.csv?" + q, { headers: { "Authorization": "Bearer " + token } });
  if (!r.ok) throw new Error((await r.text()).trim());
  const a = el("a", { href: URL.createObjectURL(await r.blob()), download: `kith-statement-${pool}-${period}.csv` });
  document.body.append(a); a.click(); a.remove();
}
function months(last, n) {
  const [y, m] = last.split("-").map(Number); const out = [];
  for (let i = n - 1; i >= 0; i--) { const d = new Date(Date.UTC(y, m - 1 - i, 1)); out.push(d.toISOString().slice(0, 7)); }
  return out;
}
// A chart per pool: what each member held for others and served, month by month.
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function chart(title, periods, series) {
  // series: [{ name, values: [per period] }]
  const W = 560, H = 160, left = 50, bottom = 20;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const group = (W - left) / periods.length, bar = Math.max(2, (group - 8) / Math.max(1, series.length));
  const colors = ["#2f6f4f", "#c07a2c", "#3d5a9e", "#9e3d6b", "#6b8e23", "#8b5a2b", "#4b8b9e", "#777"];
  const g = svg("svg", { width: W, height: H + 30, class: "chart", role: "img", "aria-label": title });
  const all = series.flatMap((s) => s.values);
  g.append(svg("text", { x: 0, y: 12, "font-size": 12 },
    all.some((x) => x > 0) ? `${title} (most: ${bytes(max)})` : `${title}: nothing recorded yet`));
  periods.forEach((p, i) => {
    g.append(svg("text", { x: left + i * group + 2, y: H + 25, "font-size": 11 }, p));
    series.forEach((s, j) => {
      const h = Math.round((H - bottom) * s.values[i] / max);
      g.append(svg("rect", { x: left + i * group + j * bar, y: H - h, width: bar - 1, height: h, fill: colors[j % colors.length] },
        svg("title", {}, `${s.name}, ${p}: ${bytes(s.values[i])}`)));
    });
  });
  const legend = el("p", { class: "muted" }, series.map((s, j) => el("span", { style: `color:${colors[j % colors.length]}` }, "■ " + s.name + "  ")));
  return el("div", {}, g, legend);
}
async function monthsChart(pool, period) {
  const periods = months(period, 6);
  const tables = await Promise.all(periods.map((p) =>
    call({ op: "ledger", ledger_op: "show", pool, period: p }).catch(() => ({ pools: [] }))));
  const names = {}; const held = {}; const served = {};
  tables.forEach((t, i) => {
    for (const p of t.pools || []) for (const r of p.members || []) {
      names[r.member] = r.name || r.member.slice(0, 16);
      (held[r.member] || (held[r.member] = periods.map(() => 0)))[i] = Number(r.storage_provided || 0);
      (served[r.member] || (served[r.member] = periods.map(() => 0)))[i] = Number(r.egress_served || 0);
    }
  });
  const ids = Object.keys(names);
  return el("div", { class: "charts" },
    chart("held for others", periods, ids.map((id) => ({ name: names[id], values: held[id] }))),
    chart("served", periods, ids.map((id) => ({ name: names[id], values: served[id] }))));
}

// This month's ledger of every pool: what each member gave and took, and owes.
async function ledger() {
  try {
    const t = await call({ op: "ledger", ledger_op: "show", pool: null, period: null });
    const parts = [];
    for (const p of t.pools || []) {
      const month = p.period;
      const out = el("span", { class: "muted" });
      parts.push(el("h3", {}, `${p.name}, ${p.period}`),
        el("p", {}, el("button", { class: "act", onclick: async () => {
          try { await download(p.name, month); out.textContent = ""; } catch (e) { out.className = "error"; out.textContent = e.message; }
        } }, "statement as CSV"), out),
        await monthsChart(p.name, month),
        form("enter a cost", [["amount", "e.g. 42.50"], ["what", "what it paid for"]],
          (v) => call({ op: "ledger", ledger_op: "cost", pool: p.name, amount: v.amount, what: v.what, period: month }), ledger),
        form("seal a month", [["period", "YYYY-MM, closed"]],
          (v) => call({ op: "ledger", ledger_op: "seal", pool: p.name, period: v.period }), ledger),
        el("p", { class: "muted" }, `shared costs ${money(p.costs_cents)}; cost rule ${p.cost_rule}` +
          (p.sealed_by ? `; sealed by ${p.sealed_by}` : "")),
        table(["member", "held for others", "used of others", "served", "receipted", "received", "audits passed / failed", "owes", "flags"],
          (p.members || []).map((r) => [r.name || r.member.slice(0, 16), bytes(r.storage_provided), bytes(r.storage_used),
            bytes(r.egress_served), bytes(r.egress_served_receipted), bytes(r.egress_received),
            `${r.audits_passed} / ${r.audits_failed}`, money(r.owes_cents), (r.flags || []).join(", ")])));
    }
    show("ledger", ...(parts.length ? parts : [el("p", { class: "muted" }, "No pool, no ledger.")]));
  } catch (e) { show("ledger", el("p", { class: "error" }, e.message)); }
}

// Publishing a folder dropped on the page: its files, read by the browser, go to the node in
// one upload (path and bytes of each), published as `kith site publish` would.
async function filesOf(entry, prefix, out) {
  if (entry.isFile) {
    const f = await new Promise((ok, fail) => entry.file(ok, fail));
    out.push([prefix + f.name, f]);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const e of batch) await filesOf(e, prefix + entry.name + "/", out);
    }
  }
}
function stripTop(list) {
  // A single folder dropped: its contents are the site.
  const tops = new Set(list.map(([p]) => p.split("/")[0]));
  if (tops.size === 1 && list.every(([p]) => p.includes("/"))) return list.map(([p, f]) => [p.slice(p.indexOf("/") + 1), f]);
  return list;
}
async function publishFiles(list, pool, name, members) {
  const enc = new TextEncoder(); const parts = [];
  for (const [path, f] of list) {
    const p = enc.encode(path); const head = new DataView(new ArrayBuffer(4)); head.setUint32(0, p.length, true);
    const len = new DataView(new ArrayBuffer(8)); len.setBigUint64(0, BigInt(f.size), true);
    parts.push(head.buffer, p, len.buffer, await f.arrayBuffer());
  }
  const q = new URLSearchParams({ pool, name, members: members ? "1" : "0" });
  const r = await fetch("/kith/api/v1/publish?" + q, {
    method: "POST", headers: { "Authorization": "Bearer " + token, "Content-Type": "application/octet-stream" }, body: new Blob(parts) });
  const text = await r.text();
  let v; try { v = JSON.parse(text); } catch { throw new Error(text.trim()); }
  if (v.error) throw new Error(v.error);
  return v.result;
}
function dropZone(pools) {
  const name = el("input", { name: "site", placeholder: "site name, e.g. bakery", size: "16" });
  const pool = el("select", { name: "pool" }, pools.map((p) => el("option", { value: p.name }, p.name)));
  const members = el("input", { type: "checkbox", name: "members" });
  const pick = el("input", { type: "file", id: "publish-folder", webkitdirectory: "", multiple: "" });
  const files = el("input", { type: "file", id: "publish-files", multiple: "" });
  const out = el("p", { class: "muted", id: "publish-result" });
  const go = async (list) => {
    if (!name.value.trim()) { out.className = "error"; out.textContent = "name the site first"; return; }
    out.className = "muted"; out.textContent = `publishing ${list.length} file(s)…`;
    try {
      const v = await publishFiles(stripTop(list), pool.value, name.value.trim(), members.checked);
      out.textContent = `published ${v.name} version ${v.version}: ${v.files} files, ${bytes(v.bytes)}`;
      await sites();
    } catch (e) { out.className = "error"; out.textContent = e.message; }
  };
  pick.addEventListener("change", () => go([...pick.files].map((f) => [f.webkitRelativePath || f.name, f])));
  files.addEventListener("change", () => go([...files.files].map((f) => [f.name, f])));
  const zone = el("div", { class: "drop", id: "drop" }, "Drop a folder here to publish it, or pick one: ", pick, " or files: ", files);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault(); zone.classList.remove("over");
    const list = [];
    for (const item of [...e.dataTransfer.items]) {
      const entry = item.webkitGetAsEntry && item.webkitGetAsEntry();
      if (entry) await filesOf(entry, "", list);
      else if (item.kind === "file") { const f = item.getAsFile(); if (f) list.push([f.name, f]); }
    }
    await go(list);
  });
  return el("div", {}, el("p", {}, "Publish as ", name, " in pool ", pool, " ", el("label", {}, members, " members only")), zone, out);
}

// The sites of this node's pools, and a site's versions with a roll-back.
async function sites() {
  try {
    const l = await call({ op: "site", site_op: "ls" });
    if (!(l.sites || []).length) return show("sites", el("p", { class: "muted" }, "No site yet: `kith site publish DIR --name NAME`."));
    show("sites", table(["site", "pool", "owner", "access", "version", "files", "size", "published", "requests here", "cache hits", "served by", ""],
      l.sites.map((x) => [x.name, x.pool_name, x.owner_name, x.access, x.version, x.files ?? "", bytes(x.bytes), when(x.at_ms),
        x.requests ?? 0, x.cache_hits ?? 0, `${x.nodes ?? 0} nodes`,
        el("button", { class: "act", onclick: () => versions(x.name) }, "versions")])));
  } catch (e) { show("sites", el("p", { class: "error" }, e.message)); }
}
async function versions(name) {
  try {
    const v = await call({ op: "site", site_op: "versions", name });
    const rows = (v.versions || []).map((x) => [x.version, x.files, bytes(x.bytes), when(x.at_ms),
      x.current ? "served" : el("button", { class: "act", onclick: () => rollback(name, x.version) }, "serve this one")]);
    show("site", el("h3", {}, "Versions of " + name), table(["version", "files", "size", "published", ""], rows));
  } catch (e) { show("site", el("p", { class: "error" }, e.message)); }
}
async function rollback(name, version) {
  try { await call({ op: "site", site_op: "rollback", name, version }); await versions(name); await sites(); }
  catch (e) { show("site", el("p", { class: "error" }, e.message)); }
}

function drawn() {
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// The state once, by plain requests (the page is whole before any live update comes).
async function refresh() {
  const [status, peers, pools] = await Promise.all([
    call({ op: "status" }), call({ op: "peers" }), call({ op: "pool", pool_op: "ls" })]);
  renderNode(status); renderPeers(peers); renderPools(pools);
  if (!$("publish").childElementCount && Array.isArray(pools) && pools.length) show("publish", dropZone(pools));
  await Promise.all([ledger(), sites()]);
  drawn();
}

// Live updates: server-sent events read with fetch (so the token goes in a header).
async function live() {
  if (!token) { $("login").hidden = false; $("live").textContent = "no token"; return; }
  try { await refresh(); } catch (e) { $("live").textContent = e.message; }
  // `?pool=NAME` opens that pool's page (a bookmark).
  const pool = new URLSearchParams(location.search).get("pool");
  if (pool) { open("pools"); await poolDetail(pool); }
  for (;;) {
    try {
      const r = await fetch("/kith/api/v1/events", { headers: { "Authorization": "Bearer " + token } });
      if (r.status === 401) { $("login").hidden = false; $("live").textContent = "not logged in"; return; }
      if (!r.ok) throw new Error(await r.text());
      $("live").textContent = "live";
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const st = JSON.parse(data);
          renderNode(st.status); renderPeers(st.peers); renderPools(st.pools);
          drawn();
        }
      }
    } catch (e) { $("live").textContent = "reconnecting (" + e.message + ")"; }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}
live();
