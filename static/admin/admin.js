// Herald admin page: nodes, a user's presence and live tail, and a publish form, all with the
// operator's service token (kept in sessionStorage only, sent as `Authorization: Bearer`).
// Every URL is relative to the page (`<base>/admin/`), so the page works under --base-path.
// The tail is read with fetch() (EventSource cannot send an Authorization header).

const TOKEN_KEY = "herald-admin:token";
const NODES_EVERY_MS = 3000;
/** Wait before a tail that ended (the node shut down, a network blip) is opened again. */
const TAIL_RETRY_MS = 2000;
/** Events kept in the tail list; older ones are dropped from the page. */
const TAIL_KEEP = 200;

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) ?? "";
/** The running tail: { user, controller } or null. */
let tail = null;

/** A fetch with the token; resolves to { status, body } (body parsed when JSON). */
async function call(url, options = {}) {
  const headers = { ...(options.headers ?? {}), authorization: `Bearer ${token}` };
  const r = await fetch(url, { ...options, headers, cache: "no-store" });
  const text = await r.text();
  let body = text;
  try { body = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  return { status: r.status, body };
}

/** One line for an error answer, saying what 401 and 403 mean here. */
function describe({ status, body }) {
  const message = body?.error?.message ?? (typeof body === "string" ? body : JSON.stringify(body));
  const hint = {
    401: "Unauthorized: paste a valid, unexpired service token",
    403: "Forbidden: the token lacks the publish scope (a user token is not enough)",
    404: "Not found: is this Herald running with --admin?",
  }[status];
  return hint ? `${status} ${hint} (${message})` : `${status}: ${message}`;
}

function showError(id, text) {
  const el = $(id);
  el.textContent = text ?? "";
  el.hidden = !text;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 1 ? "just now" : `${s} s ago`;
}

function setTokenState() {
  $("token-state").textContent = token ? "token set" : "no token";
}

// -- nodes --

async function refreshNodes() {
  if (!token) {
    showError("nodes-error", "Paste a service token above to see the nodes.");
    return;
  }
  let answer;
  try {
    answer = await call("nodes");
  } catch (e) {
    showError("nodes-error", `Herald did not answer: ${e.message}`);
    return;
  }
  if (answer.status !== 200) {
    showError("nodes-error", describe(answer));
    return;
  }
  showError("nodes-error", null);
  const rows = answer.body.nodes.map((n) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.node;
    if (n.self) tr.className = "self";
    tr.append(cell(n.node), cell(n.streams ?? "?", "num"), cell(ago(n.last_seen_ms), "num"));
    return tr;
  });
  $("nodes").replaceChildren(...rows);
  $("nodes-total").textContent = answer.body.nodes.reduce((sum, n) => sum + (n.streams ?? 0), 0);
  $("nodes-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// -- a user: presence and live tail --

async function lookUp(user) {
  showError("user-error", null);
  let answer;
  try {
    answer = await call(`../presence/${encodeURIComponent(user)}`);
  } catch (e) {
    showError("user-error", `Herald did not answer: ${e.message}`);
    return;
  }
  if (answer.status !== 200) {
    showError("user-error", describe(answer));
    $("presence").hidden = true;
    return;
  }
  const { online, sessions } = answer.body;
  const state = $("presence-state");
  state.textContent = online ? `online, ${sessions.length} stream${sessions.length === 1 ? "" : "s"}` : "offline";
  state.className = `pill ${online ? "ok" : ""}`;
  $("presence-sessions").replaceChildren(...sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.append(cell(s.session ?? "(no session)"), cell(s.node), cell(s.since));
    return tr;
  }));
  $("presence-table").hidden = sessions.length === 0;
  $("presence").hidden = false;
  startTail(user);
}

function tailState(text, kind = "") {
  const el = $("tail-state");
  el.textContent = text;
  el.className = `pill ${kind}`;
}

function stopTail() {
  tail?.controller.abort();
  tail = null;
  $("tail-stop").disabled = true;
}

function startTail(user) {
  stopTail();
  $("tail").replaceChildren();
  $("tail-box").hidden = false;
  $("tail-stop").disabled = false;
  const current = { user, controller: new AbortController() };
  tail = current;
  runTail(current);
}

/** Read the tail until it ends; open it again after a pause unless stopped or refused. */
async function runTail(current) {
  while (tail === current) {
    tailState("connecting…");
    let response;
    try {
      response = await fetch(`tail?user=${encodeURIComponent(current.user)}`, {
        headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
        signal: current.controller.signal,
        cache: "no-store",
      });
    } catch (e) {
      if (tail !== current) return;
      tailState(`not connected: ${e.message}`, "bad");
      await pause(TAIL_RETRY_MS);
      continue;
    }
    if (response.status !== 200) {
      const text = await response.text();
      let body = text;
      try { body = JSON.parse(text); } catch { /* keep the text */ }
      tailState(describe({ status: response.status, body }), "bad");
      if (tail === current) { tail = null; $("tail-stop").disabled = true; }
      return;
    }
    try {
      await readEvents(response.body, (event) => showEvent(current, event));
    } catch (e) {
      if (tail !== current) return;
    }
    if (tail !== current) return;
    tailState("ended; reconnecting…", "bad");
    await pause(TAIL_RETRY_MS);
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Parse a `text/event-stream` body, calling `onEvent({event, id, data})` for each event. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
        else if (field === "data") event.data.push(text);
      }
      if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
    }
  }
}

function showEvent(current, { event, id, data }) {
  if (tail !== current) return;
  let parsed = null;
  try { parsed = JSON.parse(data); } catch { /* show as text */ }
  if (event === "ready") {
    tailState(`live on ${parsed?.node ?? "this node"}`, "ok");
    return;
  }
  const li = document.createElement("li");
  li.dataset.event = event;
  if (parsed?.id) li.dataset.id = parsed.id;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = event;
  const time = document.createElement("span");
  time.className = "muted";
  time.textContent = new Date().toLocaleTimeString();
  time.title = id ? `event id ${id}` : "";
  const text = document.createElement("span");
  text.className = "data";
  text.textContent = parsed?.title ? `${parsed.title} — ${data}` : data;
  li.append(name, time, text);
  const list = $("tail");
  list.prepend(li);
  while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
}

// -- publish --

const list = (id) => $(id).value.split(",").map((s) => s.trim()).filter(Boolean);

function publishBody() {
  const notification = { title: $("pub-title").value };
  for (const field of ["body", "category", "source", "link"]) {
    const value = $(`pub-${field}`).value.trim();
    if (value) notification[field] = value;
  }
  const data = $("pub-data").value.trim();
  if (data) notification.data = JSON.parse(data);
  if ($("pub-critical").checked) notification.critical = true;
  const body = { notification };
  const users = list("pub-users");
  const groups = list("pub-groups");
  if (users.length) body.users = users;
  if (groups.length) body.groups = groups;
  const key = $("pub-idempotency").value.trim();
  if (key) body.idempotency_key = key;
  return body;
}

async function publish() {
  const out = $("publish-result");
  out.hidden = false;
  out.className = "";
  let body;
  try {
    body = publishBody();
  } catch (e) {
    out.className = "error";
    out.textContent = `Data is not valid JSON: ${e.message}`;
    return;
  }
  if (!body.users && !body.groups) {
    out.className = "error";
    out.textContent = "Name at least one user or group.";
    return;
  }
  $("pub-submit").disabled = true;
  try {
    const answer = await call("../publish", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    out.dataset.status = answer.status;
    if (answer.status === 202) {
      out.textContent = `202 Accepted\n${JSON.stringify(answer.body, null, 2)}`;
    } else {
      out.className = "error";
      out.textContent = describe(answer);
    }
  } catch (e) {
    out.className = "error";
    out.textContent = `Herald did not answer: ${e.message}`;
  } finally {
    $("pub-submit").disabled = false;
  }
}

// -- wiring --

$("token").value = token;
setTokenState();
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  setTokenState();
  refreshNodes();
});
$("token-forget").addEventListener("click", () => {
  token = "";
  $("token").value = "";
  sessionStorage.removeItem(TOKEN_KEY);
  stopTail();
  setTokenState();
  refreshNodes();
});
$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $("user").value.trim();
  if (user) lookUp(user);
});
$("tail-stop").addEventListener("click", () => { stopTail(); tailState("stopped"); });
$("publish-form").addEventListener("submit", (e) => { e.preventDefault(); publish(); });

refreshNodes();
setInterval(refreshNodes, NODES_EVERY_MS);
