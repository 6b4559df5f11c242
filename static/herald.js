// Herald browser client (ES module). `const h = await Herald.connect({ base: "" })`.
//
// One `/events` stream per browser, whatever the number of tabs:
//   1. SharedWorker (herald-worker.js) holds the stream and fans events out to every tab;
//   2. without SharedWorker, one leader tab elected with Web Locks holds it and relays over
//      BroadcastChannel; when the leader closes, the next tab takes over and resumes by id;
//   3. without either, each tab holds its own stream (`?tab=<id>`).
// The last event id is kept in localStorage, so a reload or a new leader resumes with
// `?last_event_id=` and receives what it missed, each event exactly once.
//
// An event id is `<tag>.<seq>`: the tag names one user's change log (a new user, or a log that
// restarted, has another), and seqs compare only within one tag. Only change events are
// dropped as already delivered; control events (`ready`, `reset`, `revoked`, `replaced`) never
// are: `revoked` and `replaced` carry no `id:`, so EventSource repeats the previous id on them.

const EVENTS = ["ready", "notification", "read", "unread", "deleted", "reset", "revoked", "replaced"];
const STATUS_EVENTS = new Set(["read", "unread", "deleted"]);
/** Events that are changes of the user's log: numbered, replayed, de-duplicated by id. */
const CHANGE_EVENTS = new Set(["notification", ...STATUS_EVENTS]);
/** Events the server sends without an `id:` (the `lastEventId` EventSource shows is stale). */
const UNNUMBERED_EVENTS = new Set(["revoked", "replaced"]);
/** First and longest wait between reconnect attempts after the server refused a stream, in ms. */
const MIN_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;
/** Messages between tabs, the leader and the SharedWorker. */
export const MSG = Object.freeze({ HELLO: "hello", EVENT: "event", BYE: "bye" });

/** The name of a per-`base` resource (storage key, worker, channel, lock): `herald:[kind:]<base>`. */
const scoped = (kind, base) => `herald:${kind ? `${kind}:` : ""}${base || "/"}`;
const storageKey = (base) => scoped("position", base);

/** The unread count after event `name` with `data`, from `count` (one rule for stream and tab). */
function nextUnread(name, data, count) {
  if (name === "notification") return data.read_at ? count : count + 1;
  if (STATUS_EVENTS.has(name) || name === "reset") return data.unread_count ?? count;
  return count;
}

/**
 * An event id `<tag>.<seq>` as `{ tag, seq }`; `null` for anything else (no id, a legacy plain
 * number from before tags): such a position is never compared, only sent for the server to reset.
 */
export function parseId(id) {
  const m = typeof id === "string" ? /^([0-9a-z]+)\.(\d+)$/.exec(id) : null;
  return m ? { tag: m[1], seq: Number(m[2]) } : null;
}

/** True when `id` is a position at or before `than` in the same log (so already seen there). */
function notAfter(id, than) {
  const a = parseId(id);
  const b = parseId(than);
  return Boolean(a && b && a.tag === b.tag && a.seq <= b.seq);
}

/** Where this browser last was: `{ id, unread }` (the last event id and the unread count then). */
export function loadPosition(base) {
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey(base)) ?? "null");
    return saved && typeof saved.id === "string" ? saved : null;
  } catch {
    return null;
  }
}

function savePosition(base, id, unread) {
  try {
    localStorage.setItem(storageKey(base), JSON.stringify({ id, unread }));
  } catch {
    // storage may be disabled; resuming then relies on the live connection only
  }
}

/** Forget the position (sign-out), so the next user does not resume from it. */
export function forgetPosition(base = "") {
  try {
    localStorage.removeItem(storageKey(base));
  } catch {
    // nothing stored
  }
}

/**
 * One `/events` connection with resume and reconnect. Used by the SharedWorker, the leader
 * tab and the per-tab fallback alike. `onEvent(name, data, id)` receives parsed data; for
 * `ready`, `data.unread_count` is this stream's own count (see `#receive`).
 */
export class Stream {
  constructor({ base = "", lastEventId = null, unread = null, tab = null, onEvent }) {
    this.base = base;
    this.lastEventId = lastEventId;
    this.unreadCount = unread ?? 0;
    this.tab = tab;
    this.onEvent = onEvent;
    this.ready = null;
    this.closed = false;
    this.source = null;
    this.backoff = MIN_BACKOFF_MS;
    this.timer = null;
  }

  start() {
    if (this.closed) return;
    const params = new URLSearchParams();
    if (this.lastEventId) params.set("last_event_id", this.lastEventId);
    if (this.tab) params.set("tab", this.tab);
    const query = params.toString();
    const source = new EventSource(`${this.base}/events${query ? `?${query}` : ""}`, { withCredentials: true });
    this.source = source;
    for (const name of EVENTS) {
      source.addEventListener(name, (e) => this.#receive(name, e));
    }
    source.onerror = () => {
      // CONNECTING: the browser retries by itself, sending Last-Event-ID.
      // CLOSED: the server refused (e.g. 401/429): retry ourselves with backoff.
      if (source.readyState === EventSource.CLOSED && !this.closed) {
        this.timer = setTimeout(() => this.start(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      }
    };
  }

  /** Reconnect from an earlier position (a tab that is behind joined). */
  restart(lastEventId, unread) {
    this.source?.close();
    clearTimeout(this.timer);
    this.lastEventId = lastEventId;
    this.unreadCount = unread ?? this.unreadCount;
    this.start();
  }

  #receive(name, e) {
    let data = {};
    try {
      data = e.data ? JSON.parse(e.data) : {};
    } catch {
      return;
    }
    const id = UNNUMBERED_EVENTS.has(name) ? null : e.lastEventId || null;
    if (name === "ready") {
      this.backoff = MIN_BACKOFF_MS;
      // `ready` counts everything, replay included. When it resumes from our own position,
      // our count is the one that matches, and the replayed events bring it up to date.
      const resumed = id && id === this.lastEventId;
      if (!resumed) this.unreadCount = data.unread_count ?? 0;
      data = { ...data, unread_count: this.unreadCount };
      this.ready = data;
    } else {
      this.unreadCount = nextUnread(name, data, this.unreadCount);
    }
    if (id) this.lastEventId = id;
    this.onEvent(name, data, id);
    // Ended by the server for good: a logout, an expired token, or another stream of ours.
    if (name === "revoked" || name === "replaced") this.close();
  }

  /**
   * Answer a tab that joins an existing stream at `position` ({id, unread} or null). A tab
   * behind in the same log makes the stream resume from there (the others drop the replay);
   * a tab whose position is of another log (another user's, a reset one, a legacy id) gets
   * `ready` and `reset`: it drops that position and refetches.
   */
  join(position, send) {
    const theirs = parseId(position?.id);
    const ours = parseId(this.lastEventId);
    if (theirs && ours && theirs.tag === ours.tag && theirs.seq < ours.seq) {
      this.restart(position.id, position.unread);
    } else if (this.ready) {
      send("ready", { ...this.ready, unread_count: this.unreadCount }, this.lastEventId);
      if (position?.id && theirs?.tag !== ours?.tag) {
        send("reset", { unread_count: this.unreadCount }, this.lastEventId);
      }
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.source?.close();
  }
}

function randomId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

function sameOrigin(base) {
  try {
    return new URL(base || "/", location.href).origin === location.origin;
  } catch {
    return false;
  }
}

/** Which tab-sharing mechanism this browser supports. */
function pickTransport(base) {
  if (typeof SharedWorker === "function" && sameOrigin(base)) return "shared-worker";
  if (typeof BroadcastChannel === "function" && globalThis.navigator?.locks?.request) return "leader";
  return "tab";
}

export class Herald {
  /** Resolves at the first `ready`. */
  #ready;
  #resolveReady;

  /**
   * Connect to Herald at `base` (same origin by default). Resolves once the stream is ready;
   * rejects when the browser is not signed in (no valid session cookie).
   */
  static async connect({ base = "", transport } = {}) {
    const h = new Herald(base.replace(/\/$/, ""));
    await h.#request("GET", "/notifications?limit=1");
    h.#start(transport ?? pickTransport(h.base));
    await h.#ready;
    return h;
  }

  constructor(base) {
    this.base = base;
    this.unreadCount = 0;
    this.user = null;
    this.session = null;
    this.transport = null;
    this.handlers = new Map();
    /** The last event id delivered to this tab (`<tag>.<seq>`), or null before `ready`. */
    this.lastId = null;
    this.closed = false;
    this.cleanup = [];
    this.#ready = new Promise((resolve) => (this.#resolveReady = resolve));
  }

  /** Subscribe to an event; returns a function that unsubscribes. */
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name)?.delete(fn);
  }

  /** `GET /notifications`: resolves to `{notifications, unread_count, next}`. */
  list({ limit, before, unread } = {}) {
    const q = new URLSearchParams();
    if (limit) q.set("limit", String(limit));
    if (before) q.set("before", before);
    if (unread) q.set("unread", "true");
    const query = q.toString();
    return this.#request("GET", `/notifications${query ? `?${query}` : ""}`);
  }

  markRead(id) {
    return this.#request("PATCH", `/notifications/${encodeURIComponent(id)}`, { read: true });
  }

  markUnread(id) {
    return this.#request("PATCH", `/notifications/${encodeURIComponent(id)}`, { read: false });
  }

  markAllRead() {
    return this.#request("PATCH", "/notifications", { all: true, read: true });
  }

  delete(id) {
    return this.#request("PATCH", `/notifications/${encodeURIComponent(id)}`, { deleted: true });
  }

  close() {
    this.closed = true;
    for (const undo of this.cleanup.splice(0)) undo();
  }

  async #request(method, path, body) {
    const response = await fetch(`${this.base}${path}`, {
      method,
      credentials: "include",
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    if (response.status === 204) return null;
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      const error = new Error(json?.error?.message ?? `HTTP ${response.status}`);
      error.status = response.status;
      error.code = json?.error?.code;
      throw error;
    }
    return json;
  }

  /**
   * Deliver one event to this tab's handlers, once, in order. Change events at or before this
   * tab's position in the same log were delivered already (a hand-over, or a tab that joined
   * from further back); control events are always delivered.
   */
  #deliver(name, data, id) {
    if (this.closed) return;
    const seen = id != null && notAfter(id, this.lastId);
    if (seen && CHANGE_EVENTS.has(name)) return; // already delivered here
    if (name === "ready") {
      this.user = data.user;
      this.session = data.session;
      // A `ready` behind this tab (another tab joined from further back) keeps our own count.
      if (!seen) this.unreadCount = data.unread_count ?? 0;
    } else {
      this.unreadCount = nextUnread(name, data, this.unreadCount);
    }
    // Move to `id` unless it is behind us in the same log. A `ready` or change of another log
    // (another user signed in, or the log restarted) replaces the old position; so does `reset`.
    if (parseId(id) && (name === "reset" || !seen)) this.lastId = id;
    if (this.lastId != null && !UNNUMBERED_EVENTS.has(name)) {
      savePosition(this.base, this.lastId, this.unreadCount);
    }
    if (name === "ready") this.#resolveReady();
    for (const fn of this.handlers.get(name) ?? []) {
      try {
        fn(data);
      } catch (err) {
        console.error("herald handler failed", err);
      }
    }
    // Signed out (or the token expired) for good: stop, and let go of the shared connection
    // (the leader lock, the worker port) so a tab that signs in again starts afresh.
    if (name === "revoked") this.close();
  }

  #start(transport) {
    this.transport = transport;
    const deliver = (name, data, id) => this.#deliver(name, data, id);
    if (transport === "shared-worker") return this.#startSharedWorker(deliver);
    if (transport === "leader") return this.#startLeader(deliver);
    const tabKey = scoped("tab", this.base);
    let tab = sessionStorage.getItem(tabKey);
    if (!tab) sessionStorage.setItem(tabKey, (tab = randomId()));
    const position = loadPosition(this.base);
    const stream = new Stream({ base: this.base, lastEventId: position?.id, unread: position?.unread, tab, onEvent: deliver });
    stream.start();
    this.cleanup.push(() => stream.close());
  }

  #startSharedWorker(deliver) {
    const url = new URL(`${this.base}/herald-worker.js`, location.href);
    const worker = new SharedWorker(url, { type: "module", name: scoped("", this.base) });
    const port = worker.port;
    port.onmessage = (m) => {
      if (m.data?.type === MSG.EVENT) deliver(m.data.name, m.data.data, m.data.id);
    };
    port.start();
    port.postMessage({ type: MSG.HELLO, base: this.base, position: loadPosition(this.base) });
    const bye = () => port.postMessage({ type: MSG.BYE });
    addEventListener("pagehide", bye);
    this.cleanup.push(() => {
      removeEventListener("pagehide", bye);
      bye();
      port.close();
    });
  }

  #startLeader(deliver) {
    const name = scoped("", this.base);
    const channel = new BroadcastChannel(name);
    let stream = null;
    let release;
    const released = new Promise((resolve) => (release = resolve));
    channel.onmessage = (m) => {
      const msg = m.data;
      // Events from the leader. `revoked` counts even when this tab has just become the leader
      // itself: the old leader lets go of the lock when it is revoked, and the lock can reach
      // this tab before the relayed `revoked` does.
      if (msg?.type === MSG.EVENT && (!stream || msg.name === "revoked")) deliver(msg.name, msg.data, msg.id);
      // A follower joins: the leader brings it up to date (see Stream.join).
      if (msg?.type === MSG.HELLO && stream) {
        stream.join(msg.position, (name, data, id) => channel.postMessage({ type: MSG.EVENT, name, data, id }));
      }
    };
    navigator.locks.request(`${name}:leader`, () => {
      if (this.closed) return;
      const position = this.lastId != null ? { id: this.lastId, unread: this.unreadCount } : loadPosition(this.base);
      stream = new Stream({
        base: this.base,
        lastEventId: position?.id,
        unread: position?.unread,
        onEvent: (n, data, id) => {
          channel.postMessage({ type: MSG.EVENT, name: n, data, id });
          deliver(n, data, id);
        },
      });
      stream.start();
      return released; // hold the lock until this tab closes
    });
    channel.postMessage({ type: MSG.HELLO, position: loadPosition(this.base) });
    const stop = () => {
      this.closed = true;
      stream?.close();
      release();
      channel.close();
    };
    addEventListener("pagehide", stop);
    this.cleanup.push(() => {
      removeEventListener("pagehide", stop);
      stop();
    });
  }
}

export default Herald;
