// The swarmvlan dashboard: renders every snapshot the manager pushes on
// /v1/events (Server-Sent Events). It asks the server for nothing else.
"use strict";

// Times are ms since the navigation started: firstEvent is when the first
// snapshot arrived, firstRender the first frame showing it (the VLANs),
// complete when every section of it was in the DOM; renderMs is what the
// last render took, renders counts the complete ones.
const page = { scriptStart: performance.now(), firstEvent: 0, firstRender: 0, complete: 0, renderMs: 0, renders: 0, sections: {}, version: 0, pendingVersion: 0, skew: 0, data: null };
window.swarmvlan = page;

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// palette is the number of host colours (classes c0.. in style.css). Hosts
// take them in name order, so up to that many hosts never share one.
// Classes, not inline styles: a style attribute per element is what makes
// parsing thousands of them slow.
const palette = 24;
let colours = new Map();
function setColours(o) {
  const names = new Set();
  for (const v of o.vlans) for (const s of v.slots) if (s.hostname || s.node) names.add(s.hostname || s.node);
  for (const v of o.vlans) for (const l of v.leases || []) names.add(l.hostname || l.node);
  for (const n of o.nodes) names.add(n.hostname || n.id);
  colours = new Map([...names].sort().map((n, i) => [n, "c" + (i % palette)]));
}
const colour = (name) => colours.get(name) || "c0";

function badge(ok, yes, no, cls) {
  return ok ? `<span class="badge ok">${esc(yes)}</span>` : `<span class="badge ${cls || "bad"}">${esc(no)}</span>`;
}

function age(seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function errs(list) {
  return list && list.length ? `<ul class="errs">${list.map((e) => `<li>${esc(e)}</li>`).join("")}</ul>` : "";
}

// renderLeases is, in mode cluster, a card per node: its lease count,
// shim and task addresses.
function renderLeases(v) {
  return (v.leases || []).map((l) => {
    const name = l.hostname || l.node;
    const tasks = l.tasks.map((t) =>
      `<li data-task-addr="${esc(t.address)}"${t.id ? ` data-task="${esc(t.id)}"` : ""}>${esc(t.address)}${t.service ? " " + esc(t.service) + (t.slot ? "." + t.slot : "") + ` <i>${esc(t.state)}</i>` : ' <i class="muted">no known task</i>'}${t.freshFor ? ` <span class="badge warn" data-fresh-for="${esc(t.freshFor)}">fresh: the slot's ${esc(t.freshFor)} was not free</span>` : ""}</li>`).join("");
    return `<div class="chunk lease ${colour(name)}${l.down ? " down" : ""}" data-leases="${esc(name)}" data-node="${esc(name)}" data-count="${l.count}" data-down="${l.down ? "true" : "false"}"><b>${esc(name)}</b> ${l.count} lease(s)${l.down ? ' <span class="badge bad">host down</span>' : ""}${l.shim ? `<small data-shim="${esc(l.shim)}">shim ${esc(l.shim)}</small>` : ""}<ul>${tasks || "<li>no tasks</li>"}</ul></div>`;
  }).join("");
}

// renderChunks is the chunk cards of a VLAN: holder, shim, task addresses.
function renderChunks(v) {
  if (v.mode === "cluster") return renderLeases(v);
  const held = v.slots.filter((s) => s.kind === "chunk" || s.kind === "quarantined" || (s.kind === "free" && s.pinnedTo));
  return held.map((s) => {
    const name = s.hostname || s.node || "";
    let state = "";
    if (s.kind === "quarantined") state = ` <span class="badge warn">quarantined until ${esc(s.until)}</span>`;
    else if (s.kind === "free") state = ` <span class="badge muted">free, pinned to ${esc(s.pinnedTo)}</span>`;
    else if (s.down) state = ` <span class="badge bad">host down</span>`;
    if (s.pinnedTo && s.kind !== "free") state += ` <span class="badge muted">pinned</span>`;
    const tasks = (s.tasks || []).map((t) =>
      `<li data-task-addr="${esc(t.address)}" data-task="${esc(t.id)}">${esc(t.address)} ${esc(t.service)}${t.slot ? "." + t.slot : ""} <i>${esc(t.state)}</i></li>`).join("");
    return `<div class="chunk ${s.kind} ${colour(name)}${s.down ? " down" : ""}" data-chunk="${esc(s.cidr)}" data-node="${esc(name)}" data-down="${s.down ? "true" : "false"}"><b>${esc(s.cidr)}</b> ${esc(name)}${state}${s.shim ? `<small data-shim="${esc(s.shim)}">shim ${esc(s.shim)}</small>` : ""}<ul>${tasks || "<li>no tasks</li>"}</ul></div>`;
  }).join("");
}

// renderVLAN is a VLAN's card with its map; the chunk cards go in after.
function renderVLAN(v) {
  if (v.mode === "cluster") return renderClusterVLAN(v);
  const net = v.network || "unknown";
  let map = "";
  if (v.drawn) {
    // One cell per chunk-sized slot; kept lean, a VLAN may have thousands.
    map = `<div class="map" role="img" aria-label="${esc(v.subnet)}: ${v.slots.length} chunk-sized slots">` +
      v.slots.map((s) => {
        const host = s.hostname || s.node || "";
        const cls = s.kind + (s.kind === "chunk" ? " " + colour(host) : "") + (s.down ? " down" : "") + (s.pinnedTo ? " pinned" : "");
        return `<i class="slot ${cls}" title="${esc(s.cidr + " " + (host || s.kind) + (s.pinnedTo ? ", pinned to " + s.pinnedTo : "") + (s.down ? ", host down" : ""))}"></i>`;
      }).join("") + `</div>`;
  }
  const hosts = [...new Set(v.slots.filter((s) => s.kind === "chunk").map((s) => s.hostname || s.node))];
  const legend = hosts.length <= 40 ? hosts.map((h) => `<span><i class="slot chunk ${colour(h)}"></i>${esc(h)}</span>`).join("") : `<span>${hosts.length} hosts, one colour each</span>`;
  return `<div class="card" data-vlan="${esc(v.name)}">
<h3>${esc(v.name)} <code>${esc(v.subnet)}</code> ${badge(v.ready, "ready", "not ready")} <span class="badge ${net === "ready" ? "ok" : "warn"}">swarm network ${esc(net)}</span></h3>
<p class="meta">${v.id ? "802.1Q id " + v.id : "untagged"} on <code>${esc(v.trunk)}</code>${v.gateway ? ", gateway <code>" + esc(v.gateway) + "</code>" : ""}, chunks /${v.chunkPrefix}:
${v.allocated} allocated, ${v.quarantined} quarantined, ${v.free} free, ${v.excluded} excluded${v.drawn ? "" : " (too many slots to draw: chunks in use and excluded ranges only)"}</p>
${v.message && !v.ready ? `<p class="err">${esc(v.message)}</p>` : ""}${v.networkMessage ? `<p class="meta">network: ${esc(v.networkMessage)}</p>` : ""}
${errs(v.errors)}${map}
<div class="legend">${legend}
<span><i class="slot free"></i>free</span><span><i class="slot excluded"></i>excluded</span><span><i class="slot quarantined"></i>quarantined</span><span><i class="slot down"></i>host down</span></div>
<div class="chunks"></div></div>`;
}

// renderClusterVLAN is a cluster-mode VLAN's card: one pool, its use
// drawn as a bar (leased or quarantined); the per-node lease cards go in
// after.
function renderClusterVLAN(v) {
  const net = v.network || "unknown";
  const p = v.pool || { size: 0, leased: 0, quarantined: 0, free: 0 };
  const pct = (n) => p.size ? (100 * n / p.size).toFixed(1) : 0;
  return `<div class="card" data-vlan="${esc(v.name)}" data-mode="cluster">
<h3>${esc(v.name)} <code>${esc(v.subnet)}</code> ${badge(v.ready, "ready", "not ready")} <span class="badge ${net === "ready" ? "ok" : "warn"}">swarm network ${esc(net)}</span></h3>
<p class="meta">${v.id ? "802.1Q id " + v.id : "untagged"} on <code>${esc(v.trunk)}</code>${v.gateway ? ", gateway <code>" + esc(v.gateway) + "</code>" : ""}, mode cluster, one pool:
<span data-pool>${p.size} addresses: ${p.leased} leased, ${p.quarantined} quarantined, ${p.free} free</span></p>
${v.message && !v.ready ? `<p class="err">${esc(v.message)}</p>` : ""}${v.networkMessage ? `<p class="meta">network: ${esc(v.networkMessage)}</p>` : ""}
${errs(v.errors)}<progress class="pool" max="${p.size}" value="${p.leased + p.quarantined}" aria-label="pool in use: ${pct(p.leased + p.quarantined)}%"></progress>
<div class="chunks"></div></div>`;
}

function renderService(s) {
  const health = (t) => t.health ? `<span class="badge ${t.health === "passing" ? "ok" : t.health === "warning" ? "warn" : "bad"}">${esc(t.health)}</span>` : `<span class="muted">${s.passing < 0 ? "not registered" : "no check yet"}</span>`;
  const rows = s.tasks.map((t) => {
    const addrs = Object.entries(t.addresses || {}).map(([n, a]) => `<code data-addr="${esc(a)}">${esc(a)}</code> <span class="muted">${esc(n)}</span>`).join("<br>");
    return `<tr data-task="${esc(t.id)}" data-slot="${t.slot || ""}" class="${t.nodeDown ? "down" : ""}">
<td data-h="slot">${t.slot || "-"}</td><td data-h="node" data-node="${esc(t.hostname || t.node)}">${esc(t.hostname || t.node)}${t.nodeDown ? ' <span class="badge bad">host down</span>' : ""}</td>
<td data-h="address">${addrs || '<span class="muted">none yet</span>'}</td><td data-h="docker">${esc(t.state)}${t.error ? `<div class="err">${esc(t.error)}</div>` : ""}</td><td data-h="consul">${health(t)}</td></tr>`;
  }).join("");
  const bounds = s.min || s.max ? ` within ${s.min}..${s.max || "∞"}` : "";
  const spec = s.specReplicas == null ? "unset" : s.specReplicas;
  const scale = s.scale ? `last scale to ${s.scale.replicas}${s.scale.source ? " by " + esc(s.scale.source) : ""}${s.scale.reason ? ": " + esc(s.scale.reason) : ""}${s.scale.lastUp ? ", up " + esc(s.scale.lastUp) : ""}${s.scale.lastDown ? ", down " + esc(s.scale.lastDown) : ""}` : "never scaled through the API";
  return `<div class="card" data-service="${esc(s.name)}">
<h3>${esc(s.name)} ${badge(s.ready, "ready", "not ready")} <span class="meta">${esc(s.image)}, ${esc(s.mode)} on ${esc((s.networks || []).join(", "))}</span></h3>
<p><b data-counts>${s.desired} desired / ${s.running} running / ${s.passing < 0 ? "-" : s.passing} passing</b>
<span class="meta">· ${s.mode === "global" ? "global" : `${s.replicas} replica(s) in force, spec ${spec}${bounds}`} · ${scale}</span></p>
${s.message && !s.ready ? `<p class="err">${esc(s.message)}</p>` : ""}${s.error ? `<p class="err">${esc(s.error)}</p>` : ""}
<table class="tasks"><thead><tr><th>slot</th><th>node</th><th>VLAN address</th><th>Docker</th><th>Consul</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

function renderNode(n, generated) {
  const vlans = n.vlans.map((v) => `<dt>${esc(v.vlan)}</dt><dd>${badge(v.ready, "ready", v.reason || "not ready")}
${v.chunk ? ` chunk <code>${esc(v.chunk)}</code>` : ""}${v.trunk ? ` · trunk <code>${esc(v.trunk)}</code>` : ""}${v.parent ? ` · parent <code>${esc(v.parent)}</code>` : ""}
${v.shimAddress ? ` · shim <code>${esc(v.shimAddress)}</code>` : ""}${v.link ? ` · link ${esc(v.link)}` : ""}${v.shim ? ` · shim ${esc(v.shim)}` : ""}${v.route ? ` · route ${esc(v.route)}` : ""}
${v.configNetwork ? ` · config network ${esc(v.configNetwork)}` : ""}</dd>`).join("");
  const report = n.live ? (n.reported ? `reported <span data-age="${esc(n.reported)}">${age(n.age)}</span> ago` : "live") : "no live report";
  return `<div class="card" data-node="${esc(n.hostname || n.id)}" data-live="${n.live}">
<h3>${esc(n.hostname || n.id)} ${badge(n.live, "host agent live", "host agent gone")}</h3>
<p class="meta">node <code>${esc(n.id)}</code> · ${report}${n.summary ? " · " + esc(n.summary) : ""}</p>
${n.error ? `<p class="err">${esc(n.error)}</p>` : ""}<dl class="kv">${vlans}</dl></div>`;
}

function renderActivity(o) {
  const a = o.activity;
  const sync = a.sync && a.sync.length ? a.sync.map((s) => `<dt>git ${esc(s.name)}</dt><dd>${s.commit ? `<code>${esc(s.commit)}</code>` : "no commit yet"}${s.repo ? " from " + esc(s.repo) : ""}${s.branch ? " (" + esc(s.branch) + ")" : ""} ${badge(s.ready, "in force", s.message || "not in sync", "warn")}${s.error ? `<div class="err">${esc(s.error)}</div>` : ""}</dd>`).join("") : `<dt>git sync</dt><dd class="muted">none</dd>`;
  const errors = a.errors.length ? a.errors.map((e) => `<li><b>${esc(e.object)}</b>: ${esc(e.error)}</li>`).join("") : `<li class="muted">none</li>`;
  const changes = a.changes.length ? a.changes.map((c) => `<li><time>${esc(new Date(c.time).toLocaleTimeString())}</time><b>${esc(c.object)}</b> ${esc(c.what)}</li>`).join("") : `<li class="muted">none since this manager started</li>`;
  return `<div class="grid2"><div class="card"><dl class="kv"><dt>leader</dt><dd data-leader>${esc(a.leader || "none")}</dd><dt>this page from</dt><dd>${esc(o.manager)}</dd>${sync}</dl>
${a.problems && a.problems.length ? `<p>Problems in KV:</p>${errs(a.problems)}` : ""}</div>
<div class="card"><p>Last reconcile errors</p><ul class="errs">${errors}</ul></div></div>
<div class="card"><p>Status changes</p><ul class="changes">${changes}</ul></div>`;
}

// render puts a snapshot on the page. The first one goes in section by
// section, the VLANs first and each next section after a frame, so a large
// cluster's map shows without waiting for every task row and node card;
// snapshots that arrive meanwhile wait for it, and the newest of them is
// rendered next. Later snapshots replace every section at once.
let rendering = false;
let queued = null;
function render(o) {
  if (rendering) {
    queued = o;
    return;
  }
  const start = performance.now();
  page.data = o;
  setColours(o);
  page.skew = Date.now() - Date.parse(o.generated);
  const lead = o.leader ? (o.leader === o.manager ? `<b>${esc(o.manager)}</b> (leader)` : `<b>${esc(o.manager)}</b>, a follower; leader <b>${esc(o.leader)}</b>`) : `<b>${esc(o.manager)}</b>; no leader`;
  document.getElementById("who").innerHTML = `served by ${lead}`;
  const body = (id) => document.querySelector(`#${id} .body`);
  const steps = [
    ["vlans", () => o.vlans.length ? o.vlans.map(renderVLAN).join("") : `<p class="muted">${o.synced ? "No VLAN documents." : "Reading Consul…"}</p>`],
    ["chunks", () => {
      const boxes = document.querySelectorAll("#vlans .card[data-vlan] .chunks");
      o.vlans.forEach((v, i) => { boxes[i].innerHTML = renderChunks(v); });
    }],
    ["services", () => o.services.length ? o.services.map(renderService).join("") : `<p class="muted">No Service documents.</p>`],
    ["nodes", () => o.nodes.length ? o.nodes.map((n) => renderNode(n, o.generated)).join("") : `<p class="muted">No host agent has reported.</p>`],
    ["activity", () => renderActivity(o)],
  ];
  const progressive = !page.complete && o.synced;
  const step = (i) => {
    const t0 = performance.now();
    const html = steps[i][1]();
    if (html !== undefined) body(steps[i][0]).innerHTML = html;
    page.sections[steps[i][0]] = Math.round(performance.now() - t0);
    if (i + 1 < steps.length && progressive) {
      // The next section after the next frame, so this one is painted
      // first; firstRender is the first frame with the map in it.
      requestAnimationFrame(() => setTimeout(() => {
        if (i === 0) page.firstRender = performance.now();
        step(i + 1);
      }, 0));
      return;
    }
    if (i + 1 < steps.length) {
      step(i + 1);
      return;
    }
    page.renders++;
    page.version = page.pendingVersion;
    page.renderMs = performance.now() - start;
    if (!page.complete && o.synced) page.complete = performance.now();
    rendering = false;
    if (queued) {
      const next = queued;
      queued = null;
      render(next);
    }
  };
  rendering = progressive;
  step(0);
}

// Report ages tick in the browser between snapshots.
setInterval(() => {
  for (const el of document.querySelectorAll("[data-age]")) {
    el.textContent = age((Date.now() - page.skew - Date.parse(el.dataset.age)) / 1000);
  }
}, 1000);

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("/v1/events");
  es.addEventListener("overview", (e) => {
    if (!page.firstEvent) page.firstEvent = performance.now();
    page.pendingVersion = Number(e.lastEventId) || page.pendingVersion + 1;
    conn.dataset.state = "live";
    conn.textContent = "live";
    render(JSON.parse(e.data));
  });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (a restarted manager forgets logins) or gone: reload
      // shows the login form or the page again.
      conn.dataset.state = "lost";
      conn.textContent = "disconnected";
      setTimeout(() => location.reload(), 5000);
    } else {
      conn.dataset.state = "lost";
      conn.textContent = "reconnecting";
    }
  };
}
connect();
