// The browser client's own logic in Node.js, without a server or a browser: a fake EventSource,
// fetch and storage stand in for them. What it proves: the first page, then the stream from its
// position (or from the stored one on a reload: the tab's own before the browser's); the tab's
// id kept out of a duplicated tab; a stream refused with 401 as `revoked`, other refusals
// retried; unseen and unread counts from every event;
// the requests each API call makes; errors as HeraldError; and how a shared stream answers a
// tab that joins. The same code in real Chromium against the real server: browser.test.mjs.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

/** EventSource as far as herald.js uses it; the test plays the server with `emit`. */
class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all = [];
  constructor(url, init) {
    this.url = new URL(url, "http://herald.test");
    this.init = init;
    this.readyState = FakeEventSource.OPEN;
    this.listeners = new Map();
    this.lastEventId = "";
    FakeEventSource.all.push(this);
  }
  addEventListener(name, fn) {
    this.listeners.set(name, [...(this.listeners.get(name) ?? []), fn]);
  }
  /** Send `event: name` with `data` and, when given, `id:` (EventSource repeats the last one). */
  emit(name, data, id) {
    if (id) this.lastEventId = id;
    for (const fn of this.listeners.get(name) ?? []) fn({ data: JSON.stringify(data), lastEventId: this.lastEventId });
  }
  close() {
    this.readyState = FakeEventSource.CLOSED;
  }
  /** The server refused the stream (a status other than 200): EventSource closes and errors. */
  refuse() {
    this.readyState = FakeEventSource.CLOSED;
    this.onerror();
  }
}

/** A Storage over a Map. */
function storage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

/** The page's own events (`pagehide`, `pageshow`): `addEventListener` of the window. */
const page = new EventTarget();
globalThis.addEventListener = (...a) => page.addEventListener(...a);
globalThis.removeEventListener = (...a) => page.removeEventListener(...a);

/** Resolve when `pred()` is true, polling; reject after `ms`. */
async function until(pred, ms = 3_000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Requests the client made (`{method, path, body}`) and the answers queued per "METHOD path". */
let requests;
let answers;
function answer(method, path, status, body, headers = {}) {
  answers.set(`${method} ${path}`, { status, body, headers });
}

beforeEach(() => {
  FakeEventSource.all = [];
  requests = [];
  answers = new Map();
  globalThis.EventSource = FakeEventSource;
  globalThis.localStorage = storage();
  globalThis.sessionStorage = storage();
  globalThis.fetch = async (url, init = {}) => {
    const u = new URL(url, "http://herald.test");
    const path = `${u.pathname}${u.search}`;
    const method = init.method ?? "GET";
    requests.push({ method, path, body: init.body ? JSON.parse(init.body) : undefined, credentials: init.credentials });
    const a = answers.get(`${method} ${path}`) ?? answers.get(`${method} ${u.pathname}?*`) ?? answers.get(`${method} *`);
    if (!a) throw new TypeError("fetch failed");
    if (a.status === "hang") {
      // no answer: only the request's signal ends it
      return new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    }
    return new Response(a.status === 204 ? null : JSON.stringify(a.body), { status: a.status, headers: a.headers });
  };
});

const { Herald, HeraldError, Stream, nextCounts, startPosition, parseId, loadPosition, RESUME_WITHIN_MS } = await import(
  "../../static/herald.js"
);

const n = (id, extra = {}) => ({ id, user: "alice", title: id, read_at: null, seen_at: null, replaces: null, count: 1, ...extra });
const PAGE = { notifications: [n("b"), n("a")], unread_count: 2, unseen_count: 2, next: null, position: "t1.5" };

/** `Herald.connect` on the per-tab transport, with `page` as the first page; returns `{ h, es }`. */
async function connect(page = PAGE, options = {}) {
  answer("GET", "/notifications?limit=20", 200, page);
  const connecting = Herald.connect({ transport: "tab", ...options });
  // the stream opens once the page has arrived
  while (FakeEventSource.all.length === 0) await new Promise((r) => setImmediate(r));
  const es = FakeEventSource.all[0];
  return { es, connecting };
}

/** The requests that asked, with a stream of their own, why a stream was refused. */
const probes = () => requests.filter((r) => r.path.startsWith("/events?"));

/** `connect`, and the stream ready at the page's position: `{ es, h }`. */
async function connected() {
  const { es, connecting } = await connect();
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  return { es, h: await connecting };
}

/** The position `storage` keeps, without when it was stored. */
function stored(storage) {
  const { at, ...position } = JSON.parse(storage.getItem("herald:position:/"));
  assert.ok(Math.abs(Date.now() - at) < 10_000, `stored just now: ${at}`);
  return position;
}

/** Every event delivered to `h`, as `[name, data]`. */
function record(h) {
  const got = [];
  for (const name of ["ready", "notification", "updated", "read", "unread", "seen", "deleted", "archived", "unarchived", "reset", "counts"]) {
    h.on(name, (d) => got.push([name, d]));
  }
  return got;
}

test("connect loads the first page, then streams from its position", async () => {
  const { es, connecting } = await connect();
  assert.deepEqual(requests.map((r) => r.path), ["/notifications?limit=20"]);
  assert.equal(requests[0].credentials, "include");
  assert.equal(es.url.pathname, "/events");
  assert.equal(es.url.searchParams.get("last_event_id"), "t1.5");
  assert.ok(es.url.searchParams.get("tab"), "the per-tab transport names its tab");
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  const h = await connecting;
  assert.deepEqual(h.page, PAGE);
  assert.equal(h.user, "alice");
  assert.equal(h.unreadCount, 2);
  assert.equal(h.unseenCount, 2);
  assert.equal(h.lastId, "t1.5");
  assert.deepEqual(stored(localStorage), { id: "t1.5", unread: 2, unseen: 2 });
  h.close();
  assert.equal(es.readyState, FakeEventSource.CLOSED);
});

test("a reload resumes from the stored position when it is in the page's log and not after it", () => {
  assert.equal(startPosition({ id: "t1.3" }, "t1.5"), "t1.3");
  assert.equal(startPosition({ id: "t1.5" }, "t1.5"), "t1.5");
  assert.equal(startPosition({ id: "t1.9" }, "t1.5"), "t1.5", "a position after the page is not trusted");
  assert.equal(startPosition({ id: "other.3" }, "t1.5"), "t1.5", "another user's log is dropped");
  assert.equal(startPosition({ id: "17" }, "t1.5"), "t1.5", "a legacy plain number is dropped");
  assert.equal(startPosition(null, "t1.5"), "t1.5");
});

test("the stream resumes from the stored position and delivers what the page already has once", async () => {
  localStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.4", unread: 1, unseen: 1, at: Date.now() }));
  const { es, connecting } = await connect();
  assert.equal(es.url.searchParams.get("last_event_id"), "t1.4");
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.4");
  const h = await connecting;
  const got = record(h);
  es.emit("notification", { ...n("b"), unread_count: 2, unseen_count: 2 }, "t1.5");
  es.emit("notification", { ...n("b"), unread_count: 2, unseen_count: 2 }, "t1.5"); // a duplicate
  assert.deepEqual(got.map(([name]) => name), ["notification"]);
  assert.equal(h.lastId, "t1.5");
  h.close();
});

test("a new tab resumes from the browser's position only when it is recent; leaving the page makes it so", async () => {
  const at = Date.now() - RESUME_WITHIN_MS - 1000;
  localStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.4", unread: 1, unseen: 1, at }));
  const { es, connecting } = await connect();
  assert.equal(es.url.searchParams.get("last_event_id"), "t1.5", "an old visit starts from its page");
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  const h = await connecting;
  sessionStorage.removeItem("herald:position:/"); // as in a new tab
  localStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.5", unread: 2, unseen: 2, at }));
  assert.equal(loadPosition(""), null);
  page.dispatchEvent(new Event("pagehide"));
  assert.equal(loadPosition("").id, "t1.5");
  h.close();
});

test("a tab the browser restores long after it left (its session kept) starts from its page, as a new visit", async () => {
  const at = Date.now() - RESUME_WITHIN_MS - 1000;
  sessionStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.2", unread: 1, unseen: 1, at }));
  localStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.3", unread: 1, unseen: 1, at }));
  const { es, connecting } = await connect();
  assert.equal(es.url.searchParams.get("last_event_id"), "t1.5", "no replay of what its page lists");
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  const h = await connecting;
  // a reload: leaving the page makes this tab's own position recent again
  sessionStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.4", unread: 1, unseen: 1, at }));
  page.dispatchEvent(new Event("pagehide"));
  assert.equal(loadPosition("").id, "t1.4");
  h.close();
});

test("unseen and unread counts follow every event that carries them", async () => {
  const { es, h } = await connected();
  const got = record(h);
  const step = (name, data, id, unread, unseen) => {
    es.emit(name, data, id);
    assert.deepEqual([h.unreadCount, h.unseenCount], [unread, unseen], `after ${name}`);
  };
  step("notification", { ...n("c"), unread_count: 3, unseen_count: 3 }, "t1.6", 3, 3);
  step("seen", { ids: ["a", "b", "c"], unread_count: 3, unseen_count: 0 }, "t1.7", 3, 0);
  assert.equal(h.badgeCount, 0, "the badge counts unseen by default");
  step("read", { ids: ["a"], unread_count: 2, unseen_count: 0 }, "t1.8", 2, 0);
  step("archived", { ids: ["b"], unread_count: 1, unseen_count: 0 }, "t1.9", 1, 0);
  step("unarchived", { ids: ["b"], unread_count: 2, unseen_count: 0 }, "t1.10", 2, 0);
  step("updated", { ...n("c", { snoozed_until: "2030-01-01T00:00:00Z" }), unread_count: 1, unseen_count: 0 }, "t1.11", 1, 0);
  step("deleted", { ids: ["b"], reason: "expired", unread_count: 0, unseen_count: 0 }, "t1.12", 0, 0);
  // an event at or before our position is a repeat: dropped
  step("notification", { ...n("c"), unread_count: 3, unseen_count: 3 }, "t1.6", 0, 0);
  assert.deepEqual(got.filter(([name]) => name !== "counts").map(([name]) => name),
    ["notification", "seen", "read", "archived", "unarchived", "updated", "deleted"]);
  assert.deepEqual(got.filter(([name]) => name === "counts").map(([, d]) => [d.unread_count, d.unseen_count]),
    [[3, 3], [3, 0], [2, 0], [1, 0], [2, 0], [1, 0], [0, 0]], "counts fires when a count changed");
  assert.deepEqual(stored(localStorage), { id: "t1.12", unread: 0, unseen: 0 });
  h.close();
});

test("badge: \"unread\" counts unread instead", async () => {
  const { es, connecting } = await connect({ ...PAGE, unseen_count: 0 }, { badge: "unread" });
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 0 }, "t1.5");
  const h = await connecting;
  assert.equal(h.badgeCount, 2);
  assert.throws(() => new Herald("", { badge: "everything" }), TypeError);
  h.close();
});

test("a reset replaces the position and the counts", async () => {
  const { es, connecting } = await connect({ ...PAGE, position: "gone.5" });
  es.emit("ready", { user: "alice", session: "s", unread_count: 4, unseen_count: 3 }, "t1.9");
  const h = await connecting;
  const got = record(h);
  es.emit("reset", { unread_count: 4, unseen_count: 3 }, "t1.9");
  assert.deepEqual(got[0], ["reset", { unread_count: 4, unseen_count: 3 }]);
  assert.equal(h.lastId, "t1.9");
  assert.deepEqual([h.unreadCount, h.unseenCount], [4, 3]);
  h.close();
});

test("each API call makes its request", async () => {
  const { es, h } = await connected();
  answer("PATCH", "*", 200, { updated: 1 });
  answer("POST", "*", 200, n("a"));
  answer("PUT", "*", 200, { categories: { "ci builds": { muted: true } } });
  answer("GET", "*", 200, {});
  requests = [];
  const until = new Date("2030-01-02T03:04:05Z");
  await h.markSeen("a");
  await h.markSeen(["a", "b"]);
  await h.markAllSeen();
  await h.archive("a/b");
  await h.unarchive("a");
  await h.snooze("a", until);
  await h.snooze("a", null);
  await h.markRead(["a"]);
  await h.takeAction("a", "approve");
  await h.counts();
  await h.preferences();
  await h.setMuted("ci builds", true);
  await h.list({ limit: 5, before: "b", archived: "only", snoozed: "only", unseen: true, category: ["ci", "deploy"] });
  assert.deepEqual(requests.map(({ method, path, body }) => [method, path, body]), [
    ["PATCH", "/notifications/a", { seen: true }],
    ["PATCH", "/notifications", { ids: ["a", "b"], seen: true }],
    ["PATCH", "/notifications", { all: true, seen: true }],
    ["PATCH", "/notifications/a%2Fb", { archived: true }],
    ["PATCH", "/notifications/a", { archived: false }],
    ["PATCH", "/notifications/a", { snoozed_until: "2030-01-02T03:04:05.000Z" }],
    ["PATCH", "/notifications/a", { snoozed_until: null }],
    ["PATCH", "/notifications", { ids: ["a"], read: true }],
    ["POST", "/notifications/a/actions/approve", undefined],
    ["GET", "/notifications/counts", undefined],
    ["GET", "/preferences", undefined],
    ["PUT", "/preferences/categories/ci%20builds", { muted: true }],
    ["GET", "/notifications?limit=5&before=b&unseen=true&archived=only&snoozed=only&category=ci%2Cdeploy", undefined],
  ]);
  assert.throws(() => h.snooze("a", "not a time"), TypeError);
  h.close();
});

test("a tray write resolves once the stream shows it: its event delivered, the counts updated", async () => {
  const { es, h } = await connected();
  const settled = (p) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))]);
  answer("PATCH", "/notifications/a", 200, n("a", { read_at: "2030-01-01T00:00:00Z" }), { "x-herald-position": "t1.6" });
  const read = h.markRead("a");
  assert.equal(await settled(read), false, "answered, not shown yet");
  es.emit("read", { ids: ["a"], unread_count: 1, unseen_count: 1 }, "t1.6");
  assert.equal(await settled(read), true);
  assert.equal(h.unreadCount, 1);
  // a write that changed nothing leaves the log where this tab is: at once
  assert.equal(await settled(h.markRead("a")), true);
  // deleted (204), and bulk: the same
  answer("PATCH", "/notifications/b", 204, null, { "x-herald-position": "t1.7" });
  const deleted = h.delete("b");
  assert.equal(await settled(deleted), false);
  es.emit("deleted", { ids: ["b"], unread_count: 0, unseen_count: 0 }, "t1.7");
  assert.equal(await deleted, null);
  answer("PATCH", "/notifications", 200, { updated: 1 }, { "x-herald-position": "t1.8" });
  const all = h.markAllRead();
  es.emit("read", { ids: ["c"], unread_count: 0, unseen_count: 0 }, "t1.8");
  assert.deepEqual(await all, { updated: 1 });
  // a reset to another log: a write of the old one is never reached there
  answer("PATCH", "/notifications/c", 200, n("c"), { "x-herald-position": "t1.9" });
  const lost = h.markUnread("c");
  assert.equal(await settled(lost), false);
  es.emit("reset", { unread_count: 1, unseen_count: 1 }, "t2.3");
  assert.equal(await settled(lost), true);
  // a stream that does not show it (reconnecting): resolved anyway, in a moment
  answer("PATCH", "/notifications/d", 200, n("d"), { "x-herald-position": "t2.4" });
  const started = Date.now();
  await h.markSeen("d");
  assert.ok(Date.now() - started >= 1_000, "waited for the stream");
  // closing resolves what waits
  answer("PATCH", "/notifications/e", 200, n("e"), { "x-herald-position": "t2.5" });
  const closing = h.markSeen("e");
  await new Promise((r) => setTimeout(r, 10));
  h.close();
  assert.equal(await settled(closing), true);
});

test("a tray write does not wait without a stream to show it: ended by replaced, or never connected", async () => {
  const { es, h } = await connected();
  const settled = (p) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))]);
  answer("PATCH", "*", 200, n("a"), { "x-herald-position": "t1.6" });
  const pending = h.markSeen("a");
  assert.equal(await settled(pending), false);
  es.emit("replaced", {});
  assert.equal(await settled(pending), true, "settled by the end");
  assert.equal(await settled(h.markSeen("a")), true, "nothing to wait for");
  h.close();
  const bare = new Herald("");
  assert.equal(await settled(bare.markSeen("a")), true, "never connected");
});

test("a refused request rejects with HeraldError: status, code and the server's message", async () => {
  const { es, h } = await connected();
  answer("POST", "/notifications/a/actions/approve", 409, { error: { code: "conflict", message: "the action was already taken" } });
  await assert.rejects(h.takeAction("a", "approve"), (e) =>
    e instanceof HeraldError && e.status === 409 && e.code === "conflict" && e.message === "the action was already taken");
  // nothing answers: the network failed
  await assert.rejects(h.archive("a"), (e) => e instanceof HeraldError && e.status === 0 && e.code === "network");
  h.close();
});

test("connect rejects with status 401 when not signed in, and opens no stream", async () => {
  answer("GET", "/notifications?limit=20", 401, { error: { code: "unauthorized", message: "missing or invalid credentials" } });
  await assert.rejects(Herald.connect({ transport: "tab" }), (e) => e.status === 401 && e.code === "unauthorized");
  assert.equal(FakeEventSource.all.length, 0);
});

test("a reload resumes from this tab's own position, not from a newer one another tab stored", async () => {
  localStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.4", unread: 2, unseen: 2, at: Date.now() }));
  sessionStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.2", unread: 1, unseen: 1, at: Date.now() }));
  const { es, connecting } = await connect();
  assert.equal(es.url.searchParams.get("last_event_id"), "t1.2");
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.2");
  es.emit("notification", { ...n("c"), unread_count: 3, unseen_count: 3 }, "t1.3");
  (await connecting).close();
  for (const storage of [sessionStorage, localStorage]) {
    assert.deepEqual(stored(storage), { id: "t1.3", unread: 3, unseen: 3 });
  }
});

test("a tab replaying from further back keeps its page's counts for what the page reflects", async () => {
  sessionStorage.setItem("herald:position:/", JSON.stringify({ id: "t1.2", unread: 1, unseen: 1, at: Date.now() }));
  const { es, connecting } = await connect(); // the page: at t1.5, 2 unread
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.2");
  const h = await connecting;
  const got = record(h);
  es.emit("notification", { ...n("c"), unread_count: 1, unseen_count: 1 }, "t1.3");
  assert.equal(h.unreadCount, 2, "not the count of a change the page reflects");
  assert.deepEqual(stored(sessionStorage), { id: "t1.3", unread: 1, unseen: 1 });
  es.emit("read", { ids: ["c"], unread_count: 0, unseen_count: 0 }, "t1.5");
  es.emit("notification", { ...n("d"), unread_count: 3, unseen_count: 3 }, "t1.6");
  assert.equal(h.unreadCount, 3);
  assert.deepEqual(got.filter(([name]) => name === "counts").map(([, c]) => c.unread_count), [3]);
  // the log went back (Redis lost it): after `reset`, every change counts again
  es.emit("reset", { unread_count: 0, unseen_count: 0 }, "t1.2");
  es.emit("notification", { ...n("e"), unread_count: 1, unseen_count: 1 }, "t1.3");
  assert.equal(h.unreadCount, 1);
  h.close();
});

test("the tab's id is in sessionStorage only while the page is gone, so a copy of the tab draws its own", async () => {
  const { es, connecting } = await connect();
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  (await connecting).close();
  const tab = es.url.searchParams.get("tab");
  assert.equal(sessionStorage.getItem("herald:tab:/"), null, "what a copy made now would inherit");
  page.dispatchEvent(new Event("pagehide"));
  assert.equal(sessionStorage.getItem("herald:tab:/"), tab, "what the reload reads");
  page.dispatchEvent(new Event("pageshow"));
  assert.equal(sessionStorage.getItem("herald:tab:/"), null);
});

test("two Herald instances of one page hold per-tab streams of their own; a reload's first takes the tab's id", async () => {
  const first = await connect();
  first.es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  const one = await first.connecting;
  answer("GET", "/notifications?limit=20", 200, PAGE);
  const connecting = Herald.connect({ transport: "tab" });
  await until(() => FakeEventSource.all.length === 2);
  const es = FakeEventSource.all[1];
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  const two = await connecting;
  const [a, b] = [first.es, es].map((source) => source.url.searchParams.get("tab"));
  assert.notEqual(a, b, "neither replaces the other");
  assert.equal(b, `${a}.1`);
  two.close();
  one.close();
  // the next first one takes the tab's id again
  answer("GET", "/notifications?limit=20", 200, PAGE);
  const again = Herald.connect({ transport: "tab" });
  await until(() => FakeEventSource.all.length === 3);
  assert.equal(FakeEventSource.all[2].url.searchParams.get("tab"), a);
  FakeEventSource.all[2].emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  (await again).close();
});

test("a stream refused with 401 ends as revoked for good; other refusals are retried with backoff", async () => {
  const { es, h } = await connected();
  const revoked = [];
  h.on("revoked", (d) => revoked.push(d));
  const errors = [];
  h.on("error", (e) => errors.push(e));
  /** The server refuses the stream; `HEAD /notifications/counts` then answers `status`. */
  const refuse = (source, status) => {
    answer("HEAD", "/notifications/counts", status, {});
    source.refuse();
  };
  // signed in, but no stream: a stream of its own says why
  answer("GET", "/events?*", 503, { error: { code: "unavailable", message: "the store fails" } });
  refuse(es, 200);
  await until(() => FakeEventSource.all.length === 2); // after the first backoff, 1 s
  assert.equal(revoked.length, 0);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof HeraldError);
  assert.deepEqual([errors[0].status, errors[0].code, errors[0].message], [503, "unavailable", "the store fails"]);
  const probe = new URL(probes()[0].path, "http://herald.test");
  assert.match(probe.searchParams.get("tab"), /^herald-probe:/, "a unit of its own: it replaces no stream");
  assert.equal(h.closed, false, "a refusal after ready is retried");
  assert.equal(FakeEventSource.all[1].url.searchParams.get("last_event_id"), "t1.5");
  refuse(FakeEventSource.all[1], 401);
  await until(() => revoked.length === 1);
  assert.deepEqual(revoked, [{ reason: "unauthorized" }]);
  assert.equal(h.closed, true);
  assert.deepEqual(requests.filter((r) => r.method === "HEAD").map((r) => [r.path, r.credentials]), [
    ["/notifications/counts", "include"],
    ["/notifications/counts", "include"],
  ]);
  await new Promise((r) => setTimeout(r, 1_200));
  assert.equal(FakeEventSource.all.length, 2, "no retry after the 401");
});

test("connect rejects with the refusal when its stream is refused before ready (429), and retries nothing", async () => {
  const { es, connecting } = await connect();
  answer("HEAD", "/notifications/counts", 200, {});
  answer("GET", "/events?*", 429, { error: { code: "too_many_streams", message: "too many streams" } });
  es.refuse();
  await assert.rejects(connecting, (e) => e instanceof HeraldError && e.status === 429 && e.code === "too_many_streams");
  await new Promise((r) => setTimeout(r, 1_200));
  assert.equal(FakeEventSource.all.length, 1, "the client stopped");
});

test("a stream whose probe opens (the refusal passed) tells nothing and retries", async () => {
  const { es, connecting } = await connect();
  answer("HEAD", "/notifications/counts", 200, {});
  answer("GET", "/events?*", 200, {}, { "content-type": "text/event-stream" });
  es.refuse();
  await until(() => FakeEventSource.all.length === 2);
  assert.equal(probes().length, 1);
  FakeEventSource.all[1].emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  (await connecting).close();
});

test("a refusal is told once per run (one probe), and a stream that opens ends the run", async () => {
  const { es, h } = await connected();
  const errors = [];
  h.on("error", (e) => errors.push([e.status, e.code]));
  answer("HEAD", "/notifications/counts", 200, {});
  answer("GET", "/events?*", 429, { error: { code: "too_many_streams", message: "too many streams" } });
  es.refuse();
  await until(() => FakeEventSource.all.length === 2);
  FakeEventSource.all[1].refuse();
  await until(() => FakeEventSource.all.length === 3, 4_000); // the second backoff, 2 s
  assert.deepEqual(errors, [[429, "too_many_streams"]]);
  assert.equal(probes().length, 1, "one probe for the run");
  FakeEventSource.all[2].emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
  FakeEventSource.all[2].refuse(); // a new run
  await until(() => errors.length === 2);
  assert.equal(probes().length, 2);
  h.close();
});

test("a refusal the status check already explains needs no probe; 200 that is no event stream is told", async () => {
  const { es, connecting } = await connect();
  answer("HEAD", "/notifications/counts", 503, {});
  es.refuse();
  await assert.rejects(connecting, (e) => e instanceof HeraldError && e.status === 503 && e.code === "unavailable");
  assert.equal(probes().length, 0);
  FakeEventSource.all.length = 0;
  // a proxy's sign-in page answers /events with 200 HTML
  const second = await connect();
  answer("HEAD", "/notifications/counts", 200, {});
  answer("GET", "/events?*", 200, {}, { "content-type": "text/html" });
  second.es.refuse();
  await assert.rejects(second.connecting, (e) => e instanceof HeraldError && e.status === 200 && /not an event stream/.test(e.message));
});

test("asking why is bounded: close aborts it, and nothing retries after", async () => {
  const { es, h } = await connected();
  let signal;
  const real = globalThis.fetch;
  globalThis.fetch = (url, init) => ((signal = init.signal), real(url, init));
  answer("HEAD", "/notifications/counts", "hang", {});
  es.refuse();
  await until(() => signal);
  h.close();
  assert.equal(signal.aborted, true);
  await new Promise((r) => setTimeout(r, 1_200));
  assert.equal(FakeEventSource.all.length, 1);
});

test("a tab that joins a shared stream while it is refused gets ready, then why", async () => {
  const { s, es } = sharedStream();
  answer("HEAD", "/notifications/counts", 200, {});
  answer("GET", "/events?*", 503, { error: { code: "unavailable", message: "the store fails" } });
  const told = [];
  s.onEvent = (...e) => told.push(e);
  es.refuse();
  await until(() => told.length === 1);
  const sent = [];
  s.join({ id: "t1.5", unread: 3, unseen: 2 }, (...e) => sent.push(e));
  assert.deepEqual(sent.map(([name]) => name), ["ready", "error"]);
  assert.deepEqual(sent[1][1], { status: 503, code: "unavailable", message: "the store fails" });
  s.close();
});

test("a tab that joins behind before the stream's first ready: every tab gets the ready", () => {
  const events = [];
  const s = new Stream({ lastEventId: "t1.5", unread: 1, unseen: 1, onEvent: (...e) => events.push(e) });
  s.start();
  const sent = [];
  s.join({ id: "t1.3", unread: 1, unseen: 1 }, (...e) => sent.push(e));
  FakeEventSource.all.at(-1).emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.3");
  assert.deepEqual(events.map(([name]) => name), ["ready"]);
  assert.equal(sent.length, 0);
  s.close();
});

test("a ready of another user (signed in as them in another tab) is followed by reset, once", async () => {
  const { es, h } = await connected();
  const got = record(h);
  es.emit("ready", { user: "bob", session: "s2", unread_count: 7, unseen_count: 7 }, "u1.9");
  es.emit("reset", { unread_count: 7, unseen_count: 7 }, "u1.9"); // a joined stream's own reset
  es.emit("notification", { ...n("c", { user: "bob" }), unread_count: 8, unseen_count: 8 }, "u1.10");
  assert.deepEqual(got.filter(([name]) => name !== "counts").map(([name]) => name), ["ready", "reset", "notification"]);
  assert.equal(h.user, "bob");
  assert.equal(h.unreadCount, 8);
  assert.equal(h.lastId, "u1.10");
  h.close();
});

test("connect rejects with status 401 when its stream is refused with 401 before ready", async () => {
  const { es, connecting } = await connect();
  answer("HEAD", "/notifications/counts", 401, {});
  es.refuse();
  await assert.rejects(connecting, (e) => e instanceof HeraldError && e.status === 401 && e.code === "unauthorized");
});

/** A shared stream (as in the worker or the leader) that has delivered up to `t1.5`. */
function sharedStream() {
  const events = [];
  const s = new Stream({ lastEventId: "t1.3", unread: 1, unseen: 1, onEvent: (...e) => events.push(e) });
  s.start();
  const es = FakeEventSource.all.at(-1);
  es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.3");
  es.emit("seen", { ids: ["a"], unread_count: 2, unseen_count: 1 }, "t1.4");
  es.emit("notification", { ...n("c"), unread_count: 3, unseen_count: 2 }, "t1.5");
  return { s, es, events };
}

test("a shared stream resumed from its own position keeps its counts until the replay brings them", () => {
  const { s, events } = sharedStream();
  assert.deepEqual(events[0], ["ready", { user: "alice", session: "s", unread_count: 1, unseen_count: 1 }, "t1.3"]);
  assert.deepEqual(s.counts, { unread: 3, unseen: 2 });
});

test("a tab that joins a shared stream: behind, it restarts the stream; ahead, it gets ready; of another log, ready and reset", () => {
  const { s } = sharedStream();
  const sent = [];
  const send = (...e) => sent.push(e);
  s.join({ id: "t1.6", unread: 3, unseen: 2 }, send);
  assert.deepEqual(sent, [["ready", { user: "alice", session: "s", unread_count: 3, unseen_count: 2 }, "t1.5"]]);
  sent.length = 0;
  s.join({ id: "other.9", unread: 0, unseen: 0 }, send);
  assert.deepEqual(sent.map(([name, data]) => [name, data]), [
    ["ready", { user: "alice", session: "s", unread_count: 3, unseen_count: 2 }],
    ["reset", { unread_count: 3, unseen_count: 2 }],
  ]);
  sent.length = 0;
  s.join({ id: "t1.4", unread: 2, unseen: 1 }, send);
  assert.equal(sent.length, 0, "the stream restarts instead");
  const restarted = FakeEventSource.all.at(-1);
  assert.equal(restarted.url.searchParams.get("last_event_id"), "t1.4");
  assert.deepEqual(s.counts, { unread: 2, unseen: 1 });
  s.close();
});

test("a tab that joins behind gets the resumed stream's ready alone; the other tabs get the replay", () => {
  const { s, events } = sharedStream();
  events.length = 0;
  const sent = [];
  s.join({ id: "t1.4", unread: 2, unseen: 1 }, (...e) => sent.push(e));
  const es = FakeEventSource.all.at(-1);
  es.emit("ready", { user: "alice", session: "s", unread_count: 3, unseen_count: 2 }, "t1.4");
  assert.deepEqual(sent.map(([name, , id]) => [name, id]), [["ready", "t1.4"]]);
  assert.equal(events.length, 0, "the tabs already here are further on");
  es.emit("notification", { ...n("c"), unread_count: 3, unseen_count: 2 }, "t1.5"); // the replay
  es.emit("notification", { ...n("d"), unread_count: 4, unseen_count: 3 }, "t1.6");
  assert.deepEqual(events.map(([name, , id]) => [name, id]), [["notification", "t1.5"], ["notification", "t1.6"]]);
  assert.equal(s.joining, null);
  s.close();
});

test("a tab that joins with a position the server no longer has gets ready and reset alone; the stream resumes from its own", () => {
  const { s, events } = sharedStream();
  events.length = 0;
  const sent = [];
  s.join({ id: "t1.1", unread: 0, unseen: 0 }, (...e) => sent.push(e));
  const gone = FakeEventSource.all.at(-1);
  assert.equal(gone.url.searchParams.get("last_event_id"), "t1.1");
  gone.emit("ready", { user: "alice", session: "s", unread_count: 4, unseen_count: 3 }, "t1.6");
  gone.emit("reset", { unread_count: 4, unseen_count: 3 }, "t1.6");
  assert.deepEqual(sent.map(([name, , id]) => [name, id]), [["ready", "t1.6"], ["reset", "t1.6"]]);
  assert.equal(events.length, 0, "no ready, no reset for the tabs already here");
  assert.equal(gone.readyState, FakeEventSource.CLOSED);
  const again = FakeEventSource.all.at(-1);
  assert.equal(again.url.searchParams.get("last_event_id"), "t1.5", "from where the stream was");
  assert.deepEqual(s.counts, { unread: 3, unseen: 2 });
  again.emit("ready", { user: "alice", session: "s", unread_count: 4, unseen_count: 3 }, "t1.5");
  again.emit("notification", { ...n("d"), unread_count: 4, unseen_count: 3 }, "t1.6"); // what came meanwhile
  assert.deepEqual(events.map(([name, , id]) => [name, id]), [["ready", "t1.5"], ["notification", "t1.6"]]);
  assert.deepEqual(s.counts, { unread: 4, unseen: 3 });
  s.close();
});

test("a tab whose cookie is of another session (signed in again) makes the shared stream start again on it", () => {
  const { s } = sharedStream();
  const sent = [];
  const send = (...e) => sent.push(e);
  // the same session: ready, as before
  s.join({ id: "t1.5", unread: 3, unseen: 2, session: "s" }, send);
  assert.deepEqual(sent.map(([name]) => name), ["ready"]);
  sent.length = 0;
  const before = FakeEventSource.all.length;
  // same log, not behind: from the stream's own position
  s.join({ id: "t1.5", unread: 3, unseen: 2, session: "s2" }, send);
  assert.equal(sent.length, 0, "every tab gets the new stream's ready");
  assert.equal(FakeEventSource.all.length, before + 1);
  assert.equal(FakeEventSource.all.at(-1).url.searchParams.get("last_event_id"), "t1.5");
  assert.equal(s.ready, null);
  // another user's log: from the tab's position
  FakeEventSource.all.at(-1).emit("ready", { user: "alice", session: "s2", unread_count: 3, unseen_count: 2 }, "t1.5");
  s.join({ id: "bob.2", unread: 1, unseen: 1, session: "s3" }, send);
  assert.equal(FakeEventSource.all.at(-1).url.searchParams.get("last_event_id"), "bob.2");
  assert.deepEqual(s.counts, { unread: 1, unseen: 1 });
  s.close();
});

test("a restarted stream replaced at once (by the request it closed) opens again, once", () => {
  const { s } = sharedStream();
  s.join({ id: "t1.4", unread: 2, unseen: 1 }, () => {});
  const restarted = FakeEventSource.all.at(-1);
  const replaced = [];
  s.onEvent = (name) => replaced.push(name);
  restarted.emit("replaced", {});
  assert.equal(s.closed, false);
  assert.equal(restarted.readyState, FakeEventSource.CLOSED);
  const again = FakeEventSource.all.at(-1);
  assert.notEqual(again, restarted);
  assert.equal(again.url.searchParams.get("last_event_id"), "t1.4");
  again.emit("replaced", {});
  assert.equal(s.closed, true, "a second replacement ends it");
  assert.deepEqual(replaced, ["replaced"]);
});

test("counts without numbers in the event (a v1 server) follow the notification's own state", () => {
  const zero = { unread: 0, unseen: 0 };
  assert.deepEqual(nextCounts("notification", n("a"), zero), { unread: 1, unseen: 1 });
  assert.deepEqual(nextCounts("notification", n("a", { seen_at: "2026-01-01T00:00:00Z" }), zero), { unread: 1, unseen: 0 });
  assert.deepEqual(nextCounts("read", { ids: ["a"], unread_count: 0 }, { unread: 1, unseen: 1 }), { unread: 0, unseen: 1 });
  assert.deepEqual(parseId("t1.5"), { tag: "t1", seq: 5 });
  assert.equal(parseId("5"), null);
});

// ---- h.push, against a stand-in browser (the real one: push.test.mjs) ----

/**
 * Web Push globals for `fn`: a service worker container whose registration records the
 * messages its worker gets, a PushManager with one subscription at most, and `Notification`
 * whose prompt answers `permission`. Removed afterwards.
 */
async function withPushBrowser({ permission = "granted", subscribe } = {}, fn) {
  const b = { permission, messages: [], calls: [], subscription: null, registration: null };
  const pushManager = {
    getSubscription: async () => b.subscription,
    subscribe: subscribe ?? (async (options) => {
      b.calls.push(["subscribe", options.userVisibleOnly, [...options.applicationServerKey]]);
      const endpoint = "https://push.example/1";
      b.subscription = {
        endpoint,
        options,
        toJSON: () => ({ endpoint, keys: { p256dh: "p", auth: "a" } }),
        unsubscribe: async () => {
          b.calls.push(["unsubscribe"]);
          b.subscription = null;
          return true;
        },
      };
      return b.subscription;
    }),
  };
  const globals = {
    isSecureContext: true,
    PushManager: function PushManager() {},
    location: { href: "http://herald.test/app/page" },
    Notification: { get permission() { return b.permission; }, requestPermission: async () => (b.calls.push(["prompt"]), b.permission) },
    navigator: {
      serviceWorker: {
        register: async (url, options) => {
          b.calls.push(["register", url, options.scope]);
          b.registration = {
            scope: `http://herald.test${options.scope}`,
            active: { scriptURL: `http://herald.test${url}`, postMessage: (m) => b.messages.push(m) },
            pushManager,
            getNotifications: async () => [{ close: () => b.calls.push(["close"]) }],
            unregister: async () => (b.calls.push(["unregister"]), (b.registration = null), true),
          };
          return b.registration;
        },
        getRegistration: async () => b.registration,
      },
    },
  };
  const saved = Object.fromEntries(Object.keys(globals).map((k) => [k, Object.getOwnPropertyDescriptor(globalThis, k)]));
  for (const [k, value] of Object.entries(globals)) Object.defineProperty(globalThis, k, { value, configurable: true, writable: true });
  try {
    await fn(b);
  } finally {
    for (const [k, d] of Object.entries(saved)) (d ? Object.defineProperty(globalThis, k, d) : delete globalThis[k]);
  }
}

const failure = (promise) => promise.then(() => assert.fail("resolved"), (e) => ({ name: e.name, code: e.code, status: e.status }));

test("h.push.enable() subscribes with the server's key and posts it; disable() undoes both; errors say why", async () => {
  await withPushBrowser({}, async (b) => {
    const h = new Herald("/app");
    answer("GET", "/app/push/key", 200, { public_key: "BAEC_w" }); // base64url of [4, 1, 2, 255]
    answer("POST", "/app/push/subscriptions", 201, { endpoint: "https://push.example/1" });
    answer("DELETE", "/app/push/subscriptions", 204);
    assert.equal(h.push.supported, true);
    assert.equal(await h.push.enabled(), false);
    assert.equal(await h.push.enable(), true);
    assert.deepEqual(b.calls, [["prompt"], ["register", "/app/herald-sw.js", "/app/"], ["subscribe", true, [4, 1, 2, 255]]]);
    assert.deepEqual(requests.map((r) => [r.method, r.path, r.body]), [
      ["GET", "/app/push/key", undefined],
      ["POST", "/app/push/subscriptions", { endpoint: "https://push.example/1", keys: { p256dh: "p", auth: "a" } }],
    ]);
    assert.equal(await h.push.enabled(), true);
    // Herald got a new key pair: the old subscription is useless, enable() replaces it
    answer("GET", "/app/push/key", 200, { public_key: "BAEC_g" }); // [4, 1, 2, 254]
    const later = new Herald("/app");
    assert.equal(await later.push.enabled(), false);
    assert.equal(await later.push.enable(), true);
    assert.deepEqual(b.calls.slice(-4), [["prompt"], ["register", "/app/herald-sw.js", "/app/"], ["unsubscribe"], ["subscribe", true, [4, 1, 2, 254]]]);
    assert.equal(await later.push.enabled(), true);
    assert.equal(await h.push.disable(), true);
    assert.deepEqual(requests.at(-1), { method: "DELETE", path: "/app/push/subscriptions", body: { endpoint: "https://push.example/1" }, credentials: "include" });
    assert.deepEqual(b.calls.slice(-3), [["unsubscribe"], ["close"], ["unregister"]], "what it shows closed, the worker unregistered");
    assert.equal(await h.push.enabled(), false);
    assert.equal(await h.push.disable(), false, "nothing left to disable");

    // An endpoint the server refuses: said as such, and the browser's subscription is dropped.
    answer("POST", "/app/push/subscriptions", 400, { error: { code: "invalid_request", message: "endpoint not allowed" } });
    assert.deepEqual(await failure(h.push.enable()), { name: "HeraldError", code: "push_refused", status: 0 });
    assert.equal(b.subscription, null);
    assert.deepEqual(b.calls.at(-1), ["unsubscribe"]);
  });
  await withPushBrowser({ permission: "denied" }, async () => {
    answer("GET", "/push/key", 200, { public_key: "BAEC_w" });
    assert.deepEqual(await failure(new Herald("").push.enable()), { name: "HeraldError", code: "permission_denied", status: 0 });
  });
  await withPushBrowser({ subscribe: () => new Promise(() => {}) }, async () => {
    answer("GET", "/push/key", 200, { public_key: "BAEC_w" });
    const h = new Herald("");
    h.push.subscribeTimeout = 50; // a browser without a push service never answers
    assert.deepEqual(await failure(h.push.enable()), { name: "HeraldError", code: "push_failed", status: 0 });
  });
  await withPushBrowser({}, async (b) => {
    answer("GET", "/push/key", 404, { error: { code: "not_found", message: "Web Push is not configured on this server" } });
    const h = new Herald("");
    assert.equal(await h.push.available(), false);
    assert.deepEqual(await failure(h.push.enable()), { name: "HeraldError", code: "push_off", status: 0 });
    assert.deepEqual(b.calls, [], "no prompt for a server without Web Push");
  });
  assert.equal(new Herald("").push.supported, false, "Node has no Web Push");
  assert.deepEqual(await failure(new Herald("").push.enable()), { name: "HeraldError", code: "unsupported", status: 0 });
});

test("a shown push notification is closed through the worker when the stream reports it handled", async () => {
  await withPushBrowser({}, async (b) => {
    await navigator.serviceWorker.register("/herald-sw.js", { scope: "/" });
    const { es, connecting } = await connect();
    es.emit("ready", { user: "alice", session: "s", unread_count: 2, unseen_count: 2 }, "t1.5");
    await connecting;
    const events = [
      ["read", { ids: ["a"], unread_count: 1, unseen_count: 1 }],
      ["seen", { ids: ["b"], unread_count: 1, unseen_count: 0 }],
      ["archived", { ids: ["c"], unread_count: 1, unseen_count: 0 }],
      ["deleted", { ids: ["d", "e"], unread_count: 1, unseen_count: 0 }],
      ["updated", { ...n("f", { snoozed_until: "2030-01-01T00:00:00Z" }), unread_count: 1, unseen_count: 0 }],
      ["notification", { ...n("g", { replaces: "h", count: 2 }), unread_count: 1, unseen_count: 1 }],
      // nothing to close for these
      ["unread", { ids: ["a"], unread_count: 2, unseen_count: 1 }],
      ["updated", { ...n("i"), unread_count: 2, unseen_count: 1 }],
      ["notification", { ...n("j"), unread_count: 3, unseen_count: 2 }],
    ];
    for (const [i, [name, data]] of events.entries()) es.emit(name, data, `t1.${6 + i}`);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(b.messages, [["a"], ["b"], ["c"], ["d", "e"], ["f"], ["h"]].map((ids) => ({ type: "herald:read", ids })));
    b.permission = "default"; // nothing can be shown: nothing to tell
    es.emit("read", { ids: ["j"], unread_count: 2, unseen_count: 1 }, "t1.20");
    await new Promise((r) => setImmediate(r));
    assert.equal(b.messages.length, 6);
  });
});
