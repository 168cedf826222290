// Mote's browser console. It connects to the broker over MQTT-over-WebSocket
// as the user who logs in (so the ACL decides what the topic tree shows and
// what may be published), and uses the admin API (/api/v1) with the same
// credentials for the clients, queues, bridges and retained tables when
// that user may (the admin role, or loopback while no users exist).
import mqtt from "mqtt";
import "./style.css";
import { TopicTree } from "./tree.js";
import { Sparkline } from "./chart.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const HISTORY = 60; // samples kept for the charts (2 minutes)

const state = {
  config: null,
  user: "",
  pass: "",
  client: null,
  filters: ["#"],
  admin: false,
  tab: "topics",
  poll: null,
  selected: null,
  series: new Map(), // "queue:g" / "bridge:b" → {last, at, rates..., chart}
  overview: null,
};

const tree = new TopicTree($("tree"), (topic) => showMessage(topic));

// --- helpers -------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function b64(str) {
  const bytes = new TextEncoder().encode(str);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function decodePayload(bytes) {
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), binary: false };
  } catch {
    let hex = "";
    for (const b of bytes.slice(0, 64)) hex += b.toString(16).padStart(2, "0") + " ";
    return { text: hex.trim() + (bytes.length > 64 ? " …" : ""), binary: true };
  }
}

function fmtRate(v) {
  if (v == null || !isFinite(v)) return "–";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "badge " + cls;
}

// api calls the admin API with the login's credentials; errors carry the
// API's JSON message.
async function api(path, opts = {}) {
  const headers = { "X-Mote-Console": "1" };
  if (state.user) headers.Authorization = "Basic " + b64(state.user + ":" + state.pass);
  const res = await fetch(path, { method: opts.method || "GET", headers, cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = { error: `HTTP ${res.status}` };
  }
  if (!res.ok) {
    const err = new Error(body && body.error ? body.error : `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// --- login and MQTT ------------------------------------------------------------------

async function loadConfig() {
  try {
    state.config = await api("/api/v1/console-config");
    $("version").textContent = "v" + state.config.version;
    if (!state.config.users) {
      $("login-hint").textContent =
        "No users are configured: connect without a username (anonymous clients are accepted from this machine), or with one if the broker allows it.";
    }
  } catch (e) {
    $("login-error").textContent = "Cannot read the console configuration: " + e.message;
  }
}

function wsURL() {
  const c = state.config || {};
  if (c.ws_url) return c.ws_url;
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  if (location.protocol === "https:" && c.wss) return `wss://${host}:${c.wss.port}${c.wss.path}`;
  if (c.ws) return `ws://${host}:${c.ws.port}${c.ws.path}`;
  if (c.wss) return `wss://${host}:${c.wss.port}${c.wss.path}`;
  return null;
}

function connect(user, pass) {
  const url = wsURL();
  if (!url) {
    $("login-error").textContent =
      "The broker has no MQTT-over-WebSocket listener: set listeners.ws.address (or admin.console_ws_url).";
    return;
  }
  state.user = user;
  state.pass = pass;
  $("login-error").textContent = "";
  setStatus("connecting", "wait");
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clientId: "mote-console-" + Math.random().toString(16).slice(2, 10),
    username: user || undefined,
    password: pass || undefined,
    clean: true,
    reconnectPeriod: 3000,
    connectTimeout: 10000,
  });
  state.client = client;
  let everConnected = false;
  client.on("connect", () => {
    everConnected = true;
    setStatus("connected", "on");
    $("login").classList.add("hidden");
    $("app").classList.remove("hidden");
    $("logout").classList.remove("hidden");
    $("whoami").textContent = user ? "as " + user : "anonymous";
    subscribe();
    checkAdmin();
  });
  client.on("reconnect", () => setStatus("reconnecting", "wait"));
  client.on("close", () => {
    if (state.client === client) setStatus("disconnected", "off");
  });
  client.on("error", (err) => {
    const msg = err && err.message ? err.message : String(err);
    if (!everConnected) {
      $("login-error").textContent = "Connection refused: " + msg;
      client.end(true);
      setStatus("disconnected", "off");
    } else {
      $("sub-error").textContent = msg;
    }
  });
  client.on("message", (topic, payload, packet) => {
    tree.update(topic, {
      payload: new Uint8Array(payload),
      qos: packet.qos,
      retain: packet.retain,
      properties: packet.properties || {},
      at: new Date(),
    });
    if (state.selected === topic) showMessage(topic);
  });
}

function subscribe() {
  const client = state.client;
  if (!client) return;
  const filters = $("sub-filter")
    .value.split(",")
    .map((f) => f.trim())
    .filter(Boolean);
  const old = state.filters.filter((f) => !filters.includes(f));
  if (old.length && client.connected) client.unsubscribe(old);
  state.filters = filters;
  $("sub-error").textContent = "";
  if (!filters.length) return;
  client.subscribe(filters, { qos: 0 }, (err, granted) => {
    // MQTT.js reports a refused filter as an error or as a granted QoS of
    // 0x80 and more, depending on the reason code.
    const refused = (granted || []).filter((g) => g.qos >= 0x80).map((g) => g.topic);
    if (err && /authori/i.test(err.message)) refused.push(...filters.filter((f) => !refused.includes(f)));
    if (refused.length) {
      $("sub-error").textContent =
        "Not allowed to watch " + refused.join(", ") + " (the ACL refused it): watch topics your user may read.";
    } else if (err) {
      $("sub-error").textContent = "Subscribe failed: " + err.message;
    }
  });
}

function logout() {
  if (state.client) state.client.end(true);
  state.client = null;
  state.admin = false;
  clearInterval(state.poll);
  tree.clear();
  $("app").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("logout").classList.add("hidden");
  $("whoami").textContent = "";
  $("rates").textContent = "";
  setStatus("disconnected", "off");
}

async function checkAdmin() {
  try {
    await api("/api/v1/whoami");
    state.admin = true;
    $("admin-note").textContent = "";
  } catch (e) {
    state.admin = false;
    $("admin-note").textContent =
      e.status === 403 || e.status === 401
        ? "The admin tables need a user with the " + ((state.config && state.config.role) || "admin") + " role: " + e.message
        : "Admin API unavailable: " + e.message;
  }
  for (const b of document.querySelectorAll("#tabs .admin")) b.classList.toggle("hidden", !state.admin);
  clearInterval(state.poll);
  if (state.admin) {
    poll();
    state.poll = setInterval(poll, POLL_MS);
  }
}

// --- topic tree and publish ---------------------------------------------------------

function showMessage(topic) {
  state.selected = topic;
  const m = tree.get(topic);
  const d = $("detail");
  d.replaceChildren();
  d.className = "";
  if (!m) return;
  const p = decodePayload(m.payload);
  const props = m.properties || {};
  const rows = [
    ["Topic", topic],
    ["QoS", m.qos],
    ["Retained", m.retain ? "yes" : "no"],
    ["Received", m.at.toLocaleTimeString()],
    ["Size", m.payload.length + " bytes" + (p.binary ? " (binary, hex)" : "")],
  ];
  if (props.contentType) rows.push(["Content type", props.contentType]);
  if (props.responseTopic) rows.push(["Response topic", props.responseTopic]);
  if (props.userProperties) {
    for (const [k, v] of Object.entries(props.userProperties)) rows.push(["User property " + k, Array.isArray(v) ? v.join(", ") : v]);
  }
  const dl = el("dl");
  for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
  d.append(dl, el("pre", { class: "payload", id: "detail-payload" }, p.text));
  d.append(el("button", { type: "button", onclick: () => ($("pub-topic").value = topic) }, "Publish to this topic"));
}

function publish(ev) {
  ev.preventDefault();
  const client = state.client;
  const out = $("pub-result");
  if (!client || !client.connected) {
    out.textContent = "Not connected.";
    return;
  }
  const topic = $("pub-topic").value;
  const qos = Number($("pub-qos").value);
  const properties = {};
  if ($("pub-content-type").value) properties.contentType = $("pub-content-type").value;
  if ($("pub-response-topic").value) properties.responseTopic = $("pub-response-topic").value;
  if ($("pub-correlation").value) properties.correlationData = $("pub-correlation").value;
  if ($("pub-expiry").value) properties.messageExpiryInterval = Number($("pub-expiry").value);
  const user = {};
  for (const line of $("pub-user-props").value.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) user[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  if (Object.keys(user).length) properties.userProperties = user;
  out.className = "muted";
  out.textContent = "Publishing…";
  client.publish(topic, $("pub-payload").value, { qos, retain: $("pub-retain").checked, properties }, (err, packet) => {
    if (err) {
      out.className = "error";
      out.textContent = "Refused: " + err.message;
      return;
    }
    const rc = packet && packet.reasonCode;
    if (rc && rc >= 0x80) {
      out.className = "error";
      out.textContent = `Refused by the broker (reason 0x${rc.toString(16)}): the ACL or a limit does not allow it.`;
      return;
    }
    out.className = "ok";
    out.textContent = qos > 0 ? `Published to ${topic} (acknowledged).` : `Published to ${topic}.`;
  });
}

// --- admin tables ---------------------------------------------------------------------

function rate(key, name, value, now) {
  let s = state.series.get(key);
  if (!s) {
    s = { prev: {}, at: now, rates: {}, points: [] };
    state.series.set(key, s);
  }
  const prev = s.prev[name];
  const dt = (now - s.at) / 1000;
  s.rates[name] = prev != null && dt > 0 ? Math.max(0, (value - prev) / dt) : null;
  s.prev[name] = value;
  return s;
}

function sample(key, now, names, values) {
  let s;
  for (const n of names) s = rate(key, n, values[n], now);
  s.at = now;
  s.points.push(names.map((n) => s.rates[n] || 0));
  if (s.points.length > HISTORY) s.points.shift();
  return s;
}

function chartCell(s, labels) {
  const canvas = el("canvas", { width: 160, height: 36, class: "spark" });
  new Sparkline(canvas, labels).draw(s.points);
  return el("td", {}, canvas);
}

async function poll() {
  if (!state.admin) return;
  const now = Date.now();
  try {
    const o = await api("/api/v1/overview");
    const s = sample("overview", now, ["in", "out"], { in: o.messages_received, out: o.messages_sent });
    $("rates").textContent = `${o.clients_connected} clients · in ${fmtRate(s.rates.in)}/s · out ${fmtRate(s.rates.out)}/s`;
  } catch (e) {
    $("rates").textContent = e.message;
  }
  if (state.tab === "clients") loadClients(false);
  if (state.tab === "queues") loadQueues(now);
  if (state.tab === "bridges") loadBridges(now);
}

const clientsPage = { cursor: "", rows: [] };

async function loadClients(more) {
  const params = new URLSearchParams({ limit: "100" });
  if ($("clients-search").value) params.set("q", $("clients-search").value);
  if ($("clients-connected").value) params.set("connected", $("clients-connected").value);
  if (more && clientsPage.cursor) params.set("cursor", clientsPage.cursor);
  let page;
  try {
    page = await api("/api/v1/clients?" + params);
  } catch (e) {
    $("clients-total").textContent = e.message;
    return;
  }
  clientsPage.rows = more ? clientsPage.rows.concat(page.items) : page.items;
  clientsPage.cursor = page.next_cursor || "";
  $("clients-more").classList.toggle("hidden", !page.next_cursor);
  $("clients-total").textContent = `${page.total} total`;
  const body = $("clients-table").tBodies[0];
  body.replaceChildren(
    ...clientsPage.rows.map((c) =>
      el(
        "tr",
        { dataset: { client: c.id } },
        el("td", {}, el("a", { href: "#", onclick: (e) => (e.preventDefault(), showClient(c.id)) }, c.id)),
        el("td", {}, c.username || "–"),
        el("td", {}, el("span", { class: "badge " + (c.connected ? "on" : "off") }, c.connected ? "connected" : "offline")),
        el("td", {}, c.listener),
        el("td", {}, c.remote),
        el("td", { class: "num" }, c.subscriptions),
        el("td", { class: "num" }, c.inflight),
        el(
          "td",
          {},
          c.connected
            ? el("button", { type: "button", onclick: () => act(`/api/v1/clients/${encodeURIComponent(c.id)}/disconnect`, "clients-total", loadClients) }, "Disconnect")
            : null,
        ),
      ),
    ),
  );
}

async function showClient(id) {
  const box = $("client-detail");
  try {
    const c = await api("/api/v1/clients/" + encodeURIComponent(id));
    const subs = el("ul", {}, ...c.subscription_list.map((s) => el("li", {}, `${s.filter} (QoS ${s.qos})`)));
    box.replaceChildren(
      el("h3", {}, "Client " + c.id),
      el("p", { class: "muted" }, `${c.username || "anonymous"} · protocol ${c.protocol_version} · keepalive ${c.keepalive}s · ${c.inflight} in flight`),
      el("h4", {}, "Subscriptions"),
      subs,
    );
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function act(path, msgId, reload) {
  try {
    const r = await api(path, { method: "POST" });
    $(msgId).textContent = JSON.stringify(r);
  } catch (e) {
    $(msgId).textContent = e.message;
  }
  reload(false);
}

async function loadQueues(now = Date.now()) {
  let res;
  try {
    res = await api("/api/v1/queues");
  } catch (e) {
    $("queue-detail").textContent = e.message;
    return;
  }
  const body = $("queues-table").tBodies[0];
  if (!res.items.length) {
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, "No queues: subscribe to $share/{group}/{filter} or declare one under queues:.")));
    return;
  }
  body.replaceChildren(
    ...res.items.map((q) => {
      const s = sample("queue:" + q.group, now, ["delivered", "acked"], q);
      const enc = encodeURIComponent(q.group);
      return el(
        "tr",
        { dataset: { queue: q.group } },
        el("td", {}, q.group),
        el("td", { class: "num" }, q.depth),
        el("td", { class: "num" }, q.inflight),
        el("td", { class: "num" }, `${q.online}/${q.consumers}`),
        el("td", { class: "num" }, fmtRate(s.rates.delivered)),
        el("td", { class: "num" }, fmtRate(s.rates.acked)),
        el("td", { class: "num" }, q.dead_letters),
        chartCell(s, ["delivered/s", "acked/s"]),
        el(
          "td",
          { class: "actions" },
          el("button", { type: "button", onclick: () => peek(`/api/v1/queues/${enc}/messages`, "queue-detail", `Messages in ${q.group}`) }, "Peek"),
          el("button", { type: "button", onclick: () => peek(`/api/v1/queues/${enc}/dead`, "queue-detail", `Dead letters of ${q.group}`) }, "Dead"),
          el("button", { type: "button", onclick: () => confirm(`Purge the waiting messages of ${q.group}?`) && act(`/api/v1/queues/${enc}/purge`, "queue-detail", () => loadQueues()) }, "Purge"),
          el("button", { type: "button", onclick: () => act(`/api/v1/queues/${enc}/redrive`, "queue-detail", () => loadQueues()) }, "Redrive"),
        ),
      );
    }),
  );
}

async function peek(path, boxId, title) {
  const box = $(boxId);
  try {
    const page = await api(path + "?limit=50");
    box.replaceChildren(
      el("h3", {}, `${title} (${page.total >= 0 ? page.total : "?"})`),
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ...["Id", "Topic", "Payload", "Deliveries / attempts", "Note"].map((h) => el("th", {}, h)))),
        el(
          "tbody",
          {},
          ...page.items.map((m) =>
            el(
              "tr",
              {},
              el("td", { class: "num" }, m.id),
              el("td", {}, m.topic),
              el("td", { class: "payload-cell" }, m.payload_encoding === "base64" ? "(binary) " + m.payload : m.payload),
              el("td", { class: "num" }, m.deliveries ?? m.attempts ?? ""),
              el("td", {}, m.reason || (m.inflight ? "in flight to " + m.consumer : "")),
            ),
          ),
        ),
      ),
    );
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function loadBridges(now = Date.now()) {
  let res;
  try {
    res = await api("/api/v1/bridges");
  } catch (e) {
    $("bridge-detail").textContent = e.message;
    return;
  }
  const body = $("bridges-table").tBodies[0];
  if (!res.items.length) {
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, "No bridges: configure them under bridges:.")));
    return;
  }
  body.replaceChildren(
    ...res.items.map((b) => {
      const s = sample("bridge:" + b.name, now, ["sent", "failed"], b);
      const enc = encodeURIComponent(b.name);
      const st = b.paused ? "paused" : b.breaker_open ? "breaker open" : b.connected ? "connected" : "failing";
      return el(
        "tr",
        { dataset: { bridge: b.name } },
        el("td", {}, b.name),
        el("td", {}, el("span", { class: "badge " + (st === "connected" ? "on" : st === "paused" ? "wait" : "off") }, st)),
        el("td", { class: "num" }, b.backlog),
        el("td", { class: "num" }, fmtRate(s.rates.sent)),
        el("td", { class: "num" }, fmtRate(s.rates.failed)),
        el("td", { class: "num" }, b.dead_letters),
        el("td", { class: "error-cell" }, b.last_error || ""),
        chartCell(s, ["sent/s", "failed/s"]),
        el(
          "td",
          { class: "actions" },
          el("button", { type: "button", onclick: () => act(`/api/v1/bridges/${enc}/${b.paused ? "resume" : "pause"}`, "bridge-detail", () => loadBridges()) }, b.paused ? "Resume" : "Pause"),
          el("button", { type: "button", onclick: () => peek(`/api/v1/bridges/${enc}/dead`, "bridge-detail", `Dead letters of ${b.name}`) }, "Dead"),
          el("button", { type: "button", onclick: () => act(`/api/v1/bridges/${enc}/retry`, "bridge-detail", () => loadBridges()) }, "Retry dead"),
        ),
      );
    }),
  );
}

const retainedPage = { cursor: "", rows: [] };

async function loadRetained(more) {
  const params = new URLSearchParams({ filter: $("retained-filter").value || "#", limit: "100" });
  if (more && retainedPage.cursor) params.set("cursor", retainedPage.cursor);
  let page;
  try {
    page = await api("/api/v1/retained?" + params);
  } catch (e) {
    $("retained-total").textContent = e.message;
    return;
  }
  retainedPage.rows = more ? retainedPage.rows.concat(page.items) : page.items;
  retainedPage.cursor = page.next_cursor || "";
  $("retained-more").classList.toggle("hidden", !page.next_cursor);
  $("retained-total").textContent = `${page.total} retained`;
  $("retained-table").tBodies[0].replaceChildren(
    ...retainedPage.rows.map((m) =>
      el(
        "tr",
        { dataset: { topic: m.topic } },
        el("td", {}, el("a", { href: "#", onclick: (e) => (e.preventDefault(), showRetained(m.topic)) }, m.topic)),
        el("td", { class: "num" }, m.size),
        el("td", { class: "num" }, m.qos),
        el("td", { class: "payload-cell" }, m.payload_encoding === "base64" ? "(binary)" : m.payload),
        el("td", {}, el("button", { type: "button", onclick: () => deleteRetained(m.topic) }, "Delete")),
      ),
    ),
  );
}

async function showRetained(topic) {
  const box = $("retained-detail");
  try {
    const m = await api("/api/v1/retained/" + encodeURIComponent(topic));
    box.replaceChildren(
      el("h3", {}, m.topic),
      el("p", { class: "muted" }, `${m.size} bytes · QoS ${m.qos}${m.properties && m.properties.content_type ? " · " + m.properties.content_type : ""}`),
      el("pre", { class: "payload" }, m.payload_encoding === "base64" ? "(base64) " + m.payload : m.payload),
    );
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function deleteRetained(topic) {
  if (!confirm(`Delete the retained message on ${topic}?`)) return;
  try {
    await api("/api/v1/retained/" + encodeURIComponent(topic), { method: "DELETE" });
    $("retained-detail").replaceChildren(el("p", { class: "ok" }, "Deleted " + topic));
  } catch (e) {
    $("retained-detail").replaceChildren(el("p", { class: "error" }, e.message));
  }
  loadRetained(false);
}

// --- wiring -------------------------------------------------------------------------------

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.id !== "panel-" + name);
  if (name === "clients") loadClients(false);
  if (name === "queues") loadQueues();
  if (name === "bridges") loadBridges();
  if (name === "retained") loadRetained(false);
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect($("login-user").value, $("login-pass").value);
});
$("logout").addEventListener("click", logout);
$("sub-form").addEventListener("submit", (e) => {
  e.preventDefault();
  subscribe();
});
$("pub-form").addEventListener("submit", publish);
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
$("clients-search").addEventListener("change", () => loadClients(false));
$("clients-connected").addEventListener("change", () => loadClients(false));
$("clients-more").addEventListener("click", () => loadClients(true));
$("retained-form").addEventListener("submit", (e) => {
  e.preventDefault();
  loadRetained(false);
});
$("retained-more").addEventListener("click", () => loadRetained(true));

loadConfig();
