// The status page's script, served as /status.js: the page's Content-Security-Policy
// allows no inline script.
"use strict";
const tokenKey = "lb-admin-token";
const headers = () => {
  const token = localStorage.getItem(tokenKey);
  return token ? { "Authorization": "Bearer " + token } : {};
};
document.getElementById("save-token").onclick = () => {
  localStorage.setItem(tokenKey, document.getElementById("token").value);
  refresh();
};
const fmt = (v, unit) => v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 0) + unit;
const ago = (iso) => {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
};
function stateOf(b) {
  if (b.draining) return "draining";
  if (!b.healthy) return "down";
  if (b.ejected) return "ejected";
  return "healthy";
}
function chart(history) {
  const w = 160, h = 32, max = Math.max(1, ...history);
  const step = history.length > 1 ? w / (history.length - 1) : w;
  const points = history.map((v, i) => (i * step).toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1)).join(" ");
  return '<svg class="chart" viewBox="0 0 ' + w + ' ' + h + '"><polyline points="' + points + '"/></svg>';
}
function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}
async function act(upstream, address, action) {
  const path = "/api/upstreams/" + encodeURIComponent(upstream) + "/backends/" +
    encodeURIComponent(address) + "/" + action;
  const r = await fetch(path, { method: "POST", headers: headers() });
  if (!r.ok) document.getElementById("error").textContent = action + " " + address + " in " + upstream + ": " + r.status;
  refresh();
}
const columns = ["Backend", "State", "In flight", "Req/s", "Errors", "p50", "p99", "Req/s, last minute", ""];
// One pool: its name and balance as the heading, then its backends.
function section(u) {
  const s = document.createElement("section");
  s.dataset.upstream = u.name;
  const h = document.createElement("h2");
  const balance = document.createElement("span");
  balance.className = "balance";
  balance.textContent = u.balance;
  h.append(u.name + " ", balance);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  const body = table.createTBody();
  if (u.backends.length === 0) {
    const tr = body.insertRow();
    const td = cell("no backends", "since");
    td.colSpan = columns.length;
    tr.appendChild(td);
  }
  for (const b of u.backends) body.appendChild(row(u.name, b));
  s.append(h, table);
  return s;
}
function row(upstream, b) {
  const tr = document.createElement("tr");
  const state = stateOf(b);
  tr.dataset.backend = b.address;
  tr.dataset.state = state;
  tr.appendChild(cell(b.address + (b.entry !== b.address ? " (" + b.entry + ")" : "")));
  const st = document.createElement("td");
  st.innerHTML = '<span class="state ' + state + '">' + state + '</span> <span class="since">' +
    (b.healthy ? "up" : "down") + " for " + ago(b.health_since) + "</span>";
  tr.appendChild(st);
  tr.appendChild(cell(String(b.in_flight), "num"));
  tr.appendChild(cell(fmt(b.rps, ""), "num"));
  tr.appendChild(cell(fmt(b.error_rate * 100, "%"), "num"));
  tr.appendChild(cell(fmt(b.p50_ms, " ms"), "num"));
  tr.appendChild(cell(fmt(b.p99_ms, " ms"), "num"));
  const ch = document.createElement("td");
  ch.innerHTML = chart(b.history);
  tr.appendChild(ch);
  const actions = document.createElement("td");
  const button = document.createElement("button");
  button.textContent = b.draining ? "Enable" : "Drain";
  button.onclick = () => act(upstream, b.address, b.draining ? "enable" : "drain");
  actions.appendChild(button);
  tr.appendChild(actions);
  return tr;
}
function policies(list) {
  if (list.length === 0) return [];
  const table = document.createElement("table");
  const head = document.createElement("tr");
  for (const h of ["policy", "allowed", "denied", "limited", "unauthorized"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  table.append(head);
  for (const p of list) {
    const tr = document.createElement("tr");
    tr.append(cell(p.name), cell(p.allowed), cell(p.denied), cell(p.limited), cell(p.unauthorized));
    table.append(tr);
  }
  const title = document.createElement("h2");
  title.textContent = "policies";
  return [title, table];
}
async function refresh() {
  try {
    const r = await fetch("/api/stats", { headers: headers() });
    if (r.status === 401) {
      document.getElementById("auth").style.display = "block";
      document.getElementById("meta").textContent = "this lb requires its admin token";
      return;
    }
    const stats = await r.json();
    document.getElementById("upstreams").replaceChildren(...stats.upstreams.map(section));
    document.getElementById("policies").replaceChildren(...policies(stats.policies || []));
    const all = stats.upstreams.flatMap(u => u.backends);
    const up = all.filter(b => stateOf(b) === "healthy").length;
    document.getElementById("meta").textContent =
      stats.upstreams.length + " pool(s), " + all.length + " backends, " + up + " serving · " +
      stats.connections.open + " client connection(s), " + stats.connections.tls_handshakes +
      " in their TLS handshake · updated " +
      new Date().toLocaleTimeString();
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach lb: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
