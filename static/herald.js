// Herald browser client (ES module). `const h = await Herald.connect({ base: "" })`.
//
// One `/events` stream per browser, whatever the number of tabs:
//   1. SharedWorker (herald-worker.js) holds the stream and fans events out to every tab;
//   2. without SharedWorker, one leader tab elected with Web Locks holds it and relays over
//      BroadcastChannel; when the leader closes, the next tab takes over and resumes by id;
//   3. without either, each tab holds its own stream (`?tab=<id>`).
// `connect` loads the tray's first page, then streams from the page's `position` (the change
// it reflects), so nothing falls between the list and the stream. Each tab keeps the last event
// id delivered to it in sessionStorage (which a reload keeps), the browser its latest in
// localStorage (for a new tab opened within a minute of the browser's last event or tab), each
// with when it was last delivered or left (a session the browser restores days later does not
// resume): a reload (or such a new tab) resumes from that one when it is not newer than the
// page, so what was published meanwhile arrives as events, each exactly once, even while
// other tabs kept the shared stream (and the browser's position) moving. Such events repeat
// what the first page already shows: apps drop a notification they have by id. A later visit
// starts from its page: what it lists does not come again as events.
// A stream refused with 401 (the session or token is gone, say a restart lost it) ends like a
// server-sent `revoked`, `{"reason": "unauthorized"}`; other refusals are retried with backoff,
// told to the app as an `error` (a `HeraldError`) at the first of each run, and reject
// `connect` before `ready`.
// A tab whose shared stream moves to another user (signed in as them in another tab) gets
// `reset` after that user's `ready`.
//
// An event id is `<tag>.<seq>`: the tag names one user's change log (a new user, or a log that
// restarted, has another), and seqs compare only within one tag. Only change events are
// dropped as already delivered; control events (`ready`, `reset`, `revoked`, `replaced`) never
// are: `revoked` and `replaced` carry no `id:`, so EventSource repeats the previous id on them.
//
// Web Push on this device (`h.push`, with the service worker herald-sw.js): the last section.

/** Changes of the user's log: numbered, replayed, de-duplicated by id. */
const CHANGE_EVENTS = new Set(["notification", "updated", "read", "unread", "seen", "deleted", "archived", "unarchived"]);
const EVENTS = ["ready", ...CHANGE_EVENTS, "reset", "revoked", "replaced"];
/** Events the server sends without an `id:` (the `lastEventId` EventSource shows is stale). */
const UNNUMBERED_EVENTS = new Set(["revoked", "replaced"]);
/**
 * The client's own event for a stream the server refused (not with 401): `{ status, code,
 * message }`, as a `HeraldError` to `h.on("error")`, once per run of refusals (and to a tab
 * that joins meanwhile). The stream is retried with backoff; before the first `ready`,
 * `connect` rejects with it instead.
 */
const REFUSED = "error";
/** The `?tab=` prefix of the stream that asks why a stream was refused (`Stream.#whyRefused`). */
const PROBE_TAB = "herald-probe:";
/** How long asking why a stream was refused may take, in ms. */
const ASK_MS = 5_000;
/** The error code of a status whose answer has no body to say it (HEAD). */
const STATUS_CODES = { 429: "rate_limited", 500: "internal", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout" };
/** First and longest wait between reconnect attempts after the server refused a stream, in ms. */
const MIN_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;
/**
 * A stream that has heard nothing for this long (pings are comments EventSource does not
 * show) asks the server where the user's change log is (the `position` of a one-item page);
 * if the log moved on and nothing arrives within `BEHIND_GRACE_MS` either, or the server does
 * not answer within it, or a reconnect has not opened in that long, the connection died
 * without a word (a NAT or a proxy dropped it): the stream reconnects and resumes from its
 * last id. `connect({ checkEvery })` changes it (at least `MIN_CHECK_MS`).
 */
const QUIET_CHECK_MS = 60_000;
const MIN_CHECK_MS = 1_000;
const BEHIND_GRACE_MS = 3_000;
/**
 * A stream restarted (for a tab that joined behind it, or a connection found dead) closes one
 * `EventSource` and opens another at once. The request of the one closed may still be opening on a busy server and,
 * opened after the new one, replace it. So `replaced` this soon after a restart opens the
 * stream again, once, instead of ending it for good.
 */
const RESTART_REPLACED_MS = 10_000;
/** Notifications `connect` loads before it streams (`h.page`), unless told otherwise. */
const FIRST_PAGE = 20;
/**
 * How long a tray write waits, once answered, for this tab's stream to show it (its event
 * delivered, the counts updated) before it resolves anyway: a stream that is reconnecting.
 */
const WRITE_SHOWN_MS = 1_500;
/** Messages between tabs, the leader and the SharedWorker. */
export const MSG = Object.freeze({ HELLO: "hello", EVENT: "event", BYE: "bye", LEADER: "leader", ALIVE: "alive", JOINED: "joined" });
/**
 * The SharedWorker tells its tabs it is alive this often, in ms; a tab that has heard nothing
 * from it for `WORKER_SILENT_MS` takes it for gone (it lived in a tab's process that crashed)
 * and connects again, which starts a new worker from the tab's position.
 */
export const WORKER_ALIVE_MS = 2_000;
const WORKER_SILENT_MS = 7_000;
/** The `?tab=` of a leader's stream in tabs whose SharedWorker did not start (see `fallBack`). */
const FALLBACK_LEADER_TAB = "leader";
/** How long a new SharedWorker has to answer before the tab shares the stream another way. */
const WORKER_START_MS = 10_000;

/** The name of a per-`base` resource (storage key, worker, channel, lock): `herald:[kind:]<base>`. */
const scoped = (kind, base) => `herald:${kind ? `${kind}:` : ""}${base || "/"}`;
const storageKey = (base) => scoped("position", base);
/** Where the position is kept: this tab's own first (a reload), then this browser's latest. */
const positionStores = () => [globalThis.sessionStorage, globalThis.localStorage];
/** How recent the browser's position must be for a new tab to resume from it: a tab reopened
 * soon after the last one closed gets what came meanwhile as events; a later visit does not
 * get everything since its last one again (its first page lists it). */
export const RESUME_WITHIN_MS = 60_000;

/**
 * The counts `{ unread, unseen }` after event `name` with `data` (one rule for stream and tab).
 * Every event of the server carries both counts; the rest is for a server that sent none with
 * a `notification` (v1), where a new unread one adds one.
 */
export function nextCounts(name, data, counts) {
  if (typeof data?.unread_count === "number") {
    return { unread: data.unread_count, unseen: typeof data.unseen_count === "number" ? data.unseen_count : counts.unseen };
  }
  if (name === "notification" && !data.replaces) {
    return { unread: counts.unread + (data.read_at ? 0 : 1), unseen: counts.unseen + (data.read_at || data.seen_at ? 0 : 1) };
  }
  return counts;
}

/** `counts` as event data: `{ unread_count, unseen_count }`. */
const countData = (counts) => ({ unread_count: counts.unread, unseen_count: counts.unseen });

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

/**
 * Where to stream from, given the stored position `saved` and the first page's `position`:
 * the stored one when it is in the page's log and not after it (a reload: what happened since
 * arrives as events), else the page's (another user's or a lost log's id is dropped).
 */
export function startPosition(saved, position) {
  if (saved?.id && notAfter(saved.id, position)) return saved.id;
  return position ?? saved?.id ?? null;
}

/**
 * Where this tab last was, else this browser: `{ id, unread, unseen }` (the last event id and
 * the counts then), each only when recent (`RESUME_WITHIN_MS`). Another tab's newer position
 * must not serve a reload: it would skip what this tab missed meanwhile (a reload's own is
 * recent: leaving the page made it so). A stale own position falls through to the browser's.
 */
export function loadPosition(base) {
  for (const storage of positionStores()) {
    try {
      const saved = JSON.parse(storage.getItem(storageKey(base)) ?? "null");
      if (saved && typeof saved.id === "string") {
        // A time ahead of now (the clock was set back) is not fresh. This tab's own position
        // is stale too when the tab comes back long after it left: a session restored by the
        // browser (a reload has just left the page, `touchPosition`).
        const age = Date.now() - saved.at;
        if (age >= 0 && age < RESUME_WITHIN_MS) return saved;
      }
    } catch {
      // storage disabled or garbled: try the next
    }
  }
  return null;
}

function savePosition(base, id, counts) {
  const saved = JSON.stringify({ id, unread: counts.unread, unseen: counts.unseen, at: Date.now() });
  for (const storage of positionStores()) {
    try {
      storage.setItem(storageKey(base), saved);
    } catch {
      // storage may be disabled; resuming then relies on the live connection only
    }
  }
}

/** The tab's and the browser's positions are as recent as now (this tab is leaving: its
 * reload, or a new tab opened soon after, resumes from them). */
function touchPosition(base) {
  for (const storage of positionStores()) {
    try {
      const saved = JSON.parse(storage.getItem(storageKey(base)) ?? "null");
      if (saved) storage.setItem(storageKey(base), JSON.stringify({ ...saved, at: Date.now() }));
    } catch {
      // nothing stored, or storage disabled
    }
  }
}

/** Forget the position (sign-out), so the next user does not resume from it. */
export function forgetPosition(base = "") {
  for (const storage of positionStores()) {
    try {
      storage.removeItem(storageKey(base));
    } catch {
      // nothing stored
    }
  }
}

/** `{ unread, unseen }` from a stored position (older ones kept the unread count alone). */
const positionCounts = (position) => ({ unread: position?.unread ?? 0, unseen: position?.unseen ?? position?.unread ?? 0 });

/**
 * One `/events` connection with resume and reconnect. Used by the SharedWorker, the leader
 * tab and the per-tab fallback alike. `onEvent(name, data, id)` receives parsed data; for
 * `ready`, the counts are this stream's own (see `#receive`).
 */
export class Stream {
  constructor({ base = "", lastEventId = null, unread = null, unseen = null, tab = null, checkEvery = QUIET_CHECK_MS, onEvent }) {
    this.base = base;
    this.checkEvery = checkEvery;
    this.heardAt = 0;
    this.checker = null;
    this.checking = false;
    this.lastEventId = lastEventId;
    this.counts = { unread: unread ?? 0, unseen: unseen ?? unread ?? 0 };
    this.tab = tab;
    this.onEvent = onEvent;
    this.ready = null;
    this.closed = false;
    /** `revoked` or `replaced` once the server ended the stream. */
    this.endedBy = null;
    this.source = null;
    this.backoff = MIN_BACKOFF_MS;
    this.timer = null;
    /** While resuming for tabs that joined behind (`#resumeFor`): where the stream was, its
     * counts then, and the joined tabs' `send`s. */
    this.joining = null;
    /** Why the server refuses this stream, from its first refusal until a `ready`. */
    this.refused = null;
    /** Aborts the requests that ask why the stream was refused. */
    this.asking = null;
  }

  /** The unread count (kept for callers of the first version). */
  get unreadCount() {
    return this.counts.unread;
  }

  start() {
    if (this.closed) return;
    const params = new URLSearchParams();
    if (this.lastEventId) params.set("last_event_id", this.lastEventId);
    if (this.tab) params.set("tab", this.tab);
    const query = params.toString();
    const source = new EventSource(`${this.base}/events${query ? `?${query}` : ""}`, { withCredentials: true });
    this.source = source;
    this.heardAt = performance.now();
    clearInterval(this.checker);
    this.checker = setInterval(() => this.#checkQuiet(source), this.checkEvery / 2);
    this.checker.unref?.(); // outside a browser (Node), the check keeps no process alive
    for (const name of EVENTS) {
      source.addEventListener(name, (e) => this.#receive(name, e));
    }
    source.onerror = async () => {
      // CONNECTING: the browser retries by itself, sending Last-Event-ID.
      // CLOSED: the server refused, and EventSource does not say why: cheap requests do.
      if (source.readyState !== EventSource.CLOSED || this.closed) return;
      const refusal = await this.#whyRefused();
      if (this.closed || this.source !== source) return; // closed or restarted meanwhile
      if (refusal?.status === 401) {
        // The session or token is gone (logged out, expired, or lost in a restart of the
        // server): as a server-sent `revoked`, it ends the stream for good.
        this.onEvent("revoked", { reason: "unauthorized" }, null);
        this.close();
        return;
      }
      // Anything else (429, 5xx, no answer) may pass: say why, once, and retry with backoff.
      if (refusal && !this.refused) {
        this.refused = refusal;
        this.onEvent(REFUSED, refusal, null);
        if (this.closed) return; // a tab that was waiting for its first `ready` gave up
      }
      this.timer = setTimeout(() => this.start(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    };
  }

  /**
   * Why the server refused a stream, as `{ status, code, message }`, within `ASK_MS` (else
   * status 0, `network`); null when it no longer does. First `HEAD /notifications/counts`
   * (401: signed out); when that passes, the first refusal of a run opens a stream of its own
   * (`?tab=` of none of ours, so it replaces nothing) for the status and error body, and lets
   * go of it at once; the next ones of the run keep that answer (`this.refused`).
   */
  async #whyRefused() {
    const abort = new AbortController();
    this.asking = abort; // `close` and `restart` abort it
    const timer = setTimeout(() => abort.abort(), ASK_MS);
    const ask = (path, init = {}) => fetch(`${this.base}${path}`, { credentials: "include", signal: abort.signal, ...init });
    try {
      const head = await ask("/notifications/counts", { method: "HEAD" });
      if (!head.ok) return { status: head.status, code: STATUS_CODES[head.status] ?? null, message: `HTTP ${head.status}` };
      if (this.refused) return this.refused;
      const r = await ask(`/events?${new URLSearchParams({ tab: `${PROBE_TAB}${randomId()}` })}`);
      const stream = r.ok && !r.redirected && (r.headers.get("content-type") ?? "").startsWith("text/event-stream");
      if (stream) return null;
      if (r.ok) return { status: r.status, code: null, message: "the answer to /events is not an event stream (a proxy in the way?)" };
      const body = await r.json().catch(() => null);
      return { status: r.status, code: body?.error?.code ?? STATUS_CODES[r.status] ?? null, message: body?.error?.message ?? `HTTP ${r.status}` };
    } catch {
      return { status: 0, code: "network", message: "Herald could not be reached" };
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  /** See `QUIET_CHECK_MS`: reconnect when the log moved on and `source` heard none of it. */
  async #checkQuiet(source) {
    if (this.closed || this.source !== source || this.checking) return;
    if (performance.now() - this.heardAt < this.checkEvery) return;
    const at = this.lastEventId;
    if (source.readyState === EventSource.OPEN) {
      this.checking = true;
      const head = await this.#head().finally(() => (this.checking = false));
      // Refused (`undefined`: the stream hears why by itself), or not behind.
      if (head === undefined || (head !== null && notAfter(head, at))) return;
      if (head !== null) await new Promise((resolve) => setTimeout(resolve, BEHIND_GRACE_MS));
      if (this.lastEventId !== at) return; // it arrived: the stream is alive
    } else if (source.readyState !== EventSource.CONNECTING) {
      return;
    }
    if (this.closed || this.source !== source) return;
    this.restart(at);
  }

  /** The user's log position (a one-item page's): `undefined` when refused, null when no answer came in time. */
  async #head() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), BEHIND_GRACE_MS);
    try {
      const r = await fetch(`${this.base}/notifications?limit=1`, { credentials: "include", signal: abort.signal });
      return r.ok ? (await r.json()).position : undefined;
    } catch {
      return abort.signal.aborted ? null : undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reconnect from an earlier position (a tab that is behind joined). */
  restart(lastEventId, counts) {
    this.source?.close();
    this.restartedAt = performance.now();
    clearTimeout(this.timer);
    this.asking?.abort();
    this.joining = null;
    this.lastEventId = lastEventId;
    if (counts) this.counts = counts;
    this.start();
  }

  /**
   * Resume from `position`, behind this stream in its log, for the tab that joined there
   * (`send` reaches it alone). The opening's `ready`, and `reset` if the server no longer has
   * that position, are that tab's alone: the tabs already here are further on. After a
   * `reset` the stream resumes from where it was, so they miss nothing (see `#receive`).
   * Before the stream's first `ready`, the tabs here wait for one too: every tab gets it.
   */
  #resumeFor(position, send) {
    if (!this.ready) return this.restart(position.id, positionCounts(position));
    const joining = this.joining ?? { from: this.lastEventId, counts: this.counts, tabs: new Set() };
    this.restart(position.id, positionCounts(position));
    joining.tabs.add(send);
    this.joining = joining;
  }

  #receive(name, e) {
    let data = {};
    try {
      data = e.data ? JSON.parse(e.data) : {};
    } catch {
      return;
    }
    this.heardAt = performance.now();
    if (name === "replaced" && this.#replacedByItself()) {
      this.source?.close();
      this.start();
      return;
    }
    const id = UNNUMBERED_EVENTS.has(name) ? null : e.lastEventId || null;
    const joining = this.joining;
    if (joining && name === "reset") {
      // The joined tab's position is gone: it refetches; the stream resumes from its own.
      for (const send of joining.tabs) send(name, data, id);
      this.restart(joining.from, joining.counts);
      return;
    }
    if (joining && name !== "ready") this.joining = null; // the replay came: the position was kept
    if (name === "ready") {
      this.backoff = MIN_BACKOFF_MS;
      this.refused = null;
      // `ready` counts everything, replay included. When it resumes from our own position,
      // our counts are the ones that match, and the replayed events bring them up to date.
      const resumed = id && id === this.lastEventId;
      if (!resumed) this.counts = nextCounts(name, data, { unread: 0, unseen: 0 });
      data = { ...data, ...countData(this.counts) };
      this.ready = data;
    } else {
      this.counts = nextCounts(name, data, this.counts);
    }
    if (id) this.lastEventId = id;
    if (joining && name === "ready") for (const send of joining.tabs) send(name, data, id);
    else this.onEvent(name, data, id);
    // Ended by the server for good: a logout, an expired token, or another stream of ours.
    if (name === "revoked" || name === "replaced") {
      this.close();
      this.endedBy = name;
    }
  }

  /** `replaced` soon after a restart (see `RESTART_REPLACED_MS`), once per restart. */
  #replacedByItself() {
    const soon = this.restartedAt !== undefined && performance.now() - this.restartedAt < RESTART_REPLACED_MS;
    this.restartedAt = undefined;
    return soon;
  }

  /**
   * Answer a tab that joins an existing stream at `position` ({id, unread, unseen} or null). A
   * tab behind in the same log makes the stream resume from there (the others drop the replay);
   * a tab whose position is of another log (another user's, a reset one, a legacy id) gets
   * `ready` and `reset`: it drops that position and refetches. A tab at or after the stream's
   * position gets `ready` and drops what it already has (its first page reflects it). A tab
   * whose cookie is of another session than the stream's (the browser signed in again since the
   * stream opened) makes the stream start again on it: from the tab's position when that is
   * in another log (another user) or behind, else from the stream's; every tab gets its `ready`.
   */
  join(position, send) {
    const theirs = parseId(position?.id);
    const ours = parseId(this.lastEventId);
    const signedInAgain = position?.session && this.ready?.session && position.session !== this.ready.session;
    if (theirs && ours && theirs.tag === ours.tag && theirs.seq < ours.seq) {
      this.#resumeFor(position, send);
    } else if (signedInAgain) {
      this.ready = null;
      if (theirs && theirs.tag !== ours?.tag) this.restart(position.id, positionCounts(position));
      else this.restart(this.lastEventId);
    } else if (this.ready) {
      send("ready", { ...this.ready, ...countData(this.counts) }, this.lastEventId);
      if (position?.id && theirs?.tag !== ours?.tag) {
        send("reset", countData(this.counts), this.lastEventId);
      }
      if (this.refused) send(REFUSED, this.refused, null); // while the stream is refused
    }
  }

  /**
   * Start again, from where it was, a stream the server ended with `replaced` (another stream
   * of the session, opened outside this browser's client), for a tab that joins: the tabs
   * already here are at its position. Then answer the tab as `join` does.
   */
  reopen(position, send) {
    this.closed = false;
    this.endedBy = null;
    this.ready = null;
    this.start();
    this.join(position, send);
  }

  close() {
    this.closed = true;
    this.joining = null;
    this.asking?.abort();
    clearTimeout(this.timer);
    clearInterval(this.checker);
    this.source?.close();
  }
}

function randomId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

/** This page's `?tab=` id per `base`, once read (see `tabId`). */
const tabIds = new Map();

/**
 * The id of this tab's own stream (`?tab=`): a newer stream of the same id replaces it. A
 * reload keeps it, through sessionStorage; but a copy of the tab ("Duplicate tab",
 * `window.open`) gets a copy of sessionStorage too, so the id is there only while the page is
 * gone (put back on `pagehide`): a copy made meanwhile draws an id of its own.
 */
function tabId(base) {
  const key = scoped("tab", base);
  if (!tabIds.has(key)) {
    tabIds.set(key, sessionStorage.getItem(key) ?? randomId());
    const hide = () => sessionStorage.setItem(key, tabIds.get(key));
    const show = () => sessionStorage.removeItem(key);
    show();
    addEventListener("pagehide", hide);
    addEventListener("pageshow", show); // back from the back/forward cache
  }
  return tabIds.get(key);
}

/** The `?tab=` ids the per-tab streams of this page hold (see `ownTab`). */
const tabsHeld = new Set();

/**
 * The `?tab=` of a new per-tab stream of this page: the tab's id (so that a reload's stream
 * replaces the one the page held before it), or, while another `Herald` of this page holds
 * that, the id with a suffix, so that the two do not replace each other.
 */
function ownTab(base) {
  const id = tabId(base);
  let tab = id;
  for (let n = 1; tabsHeld.has(tab); n++) tab = `${id}.${n}`;
  tabsHeld.add(tab);
  return tab;
}

function sameOrigin(base) {
  try {
    return new URL(base || "/", location.href).origin === location.origin;
  } catch {
    return false;
  }
}

/** Which tab-sharing mechanism this browser supports (`sharedWorker: false`: one that failed). */
function pickTransport(base, { sharedWorker = true } = {}) {
  if (sharedWorker && typeof SharedWorker === "function" && sameOrigin(base)) return "shared-worker";
  if (typeof BroadcastChannel === "function" && globalThis.navigator?.locks?.request) return "leader";
  return "tab";
}

/**
 * A refused request: `status` (0 when Herald could not be reached), `code` (the error body's
 * `invalid_request`, `not_found`, `conflict`, …, or `network`) and the server's `message`.
 */
export class HeraldError extends Error {
  constructor(message, { status = 0, code = null, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "HeraldError";
    this.status = status;
    this.code = code;
  }
}

/** `ids` as a list, or null when it names one notification (a string). */
const idList = (ids) => (Array.isArray(ids) ? ids : null);
/** A time for the server: a Date, an RFC 3339 string, or milliseconds since the epoch. */
function isoTime(t) {
  if (t == null) return null;
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) throw new TypeError(`not a time: ${t}`);
  return d.toISOString();
}

export class Herald {
  /** Resolves at the first `ready`; rejects when `revoked` comes first (a stream refused with 401). */
  #ready;
  #resolveReady;
  #rejectReady;
  /** The public session id the first page was read as (`X-Herald-Session`), if any. */
  #signedInAs = null;
  /** Removes the `pageshow` listener of `#restore`. */
  #unrestore = null;
  /** Removes the `pagehide` listener that keeps the browser's position recent. */
  #unleave = null;
  /** Tray writes waiting for this tab's stream to show them: `{ position, done }`. */
  #writes = [];
  /** This tab's stream is ready and not ended for good (`replaced`): writes wait for it. */
  #streaming = false;
  /** The position the counts were last read at (the first page's): replayed changes at or
   * before it carry older counts, which would take the badge back. */
  #countedAt = null;
  /** The position of the `reset` this client made (another user's `ready`), until the next event. */
  #madeResetAt = null;

  /**
   * Connect to Herald at `base` (same origin by default): loads the first page of the tray
   * (`limit` notifications, kept as `h.page`), then streams from the page's position. Resolves
   * once the stream is ready; rejects with a `HeraldError` when the browser is not signed in
   * (status 401), or the page or the stream is refused (429 `too_many_streams`, 503, …).
   * `badge`: what `h.badgeCount` counts, `"unseen"` (default) or `"unread"`.
   */
  static async connect({ base = "", transport, badge = "unseen", limit = FIRST_PAGE, checkEvery = QUIET_CHECK_MS } = {}) {
    const h = new Herald(base.replace(/\/$/, ""), { badge, checkEvery });
    const page = await h.list({ limit });
    h.page = page;
    h.#setCounts(nextCounts("page", page, h.#counts()));
    h.#countedAt = page.position;
    h.lastId = startPosition(loadPosition(h.base), page.position);
    h.#start(transport ?? pickTransport(h.base));
    const leaving = () => touchPosition(h.base);
    addEventListener("pagehide", leaving);
    h.#unleave = () => removeEventListener("pagehide", leaving);
    await h.#ready;
    return h;
  }

  constructor(base, { badge = "unseen", checkEvery = QUIET_CHECK_MS } = {}) {
    if (badge !== "unseen" && badge !== "unread") throw new TypeError(`badge is "unseen" or "unread", not ${badge}`);
    if (!Number.isFinite(checkEvery) || checkEvery < MIN_CHECK_MS || checkEvery > 2 ** 31 - 1) {
      throw new TypeError(`checkEvery is a number of ms from ${MIN_CHECK_MS}, not ${checkEvery}`);
    }
    this.base = base;
    this.checkEvery = checkEvery;
    this.badge = badge;
    /** Active unread and unseen notifications, kept current from every event. */
    this.unreadCount = 0;
    this.unseenCount = 0;
    /** The first page `connect` loaded: `{notifications, unread_count, unseen_count, next, position}`. */
    this.page = null;
    this.user = null;
    this.session = null;
    this.transport = null;
    this.handlers = new Map();
    /** The last event id delivered to this tab (`<tag>.<seq>`); the page's position before `ready`. */
    this.lastId = null;
    this.closed = false;
    this.cleanup = [];
    /** Web Push on this device: `h.push.enable()`, `disable()`, `enabled()`, `supported` (see `Push`). */
    this.push = new Push(base, (method, path, body) => this.#request(method, path, body));
    this.#ready = new Promise((resolve, reject) => ([this.#resolveReady, this.#rejectReady] = [resolve, reject]));
  }

  /** The badge's number: `unseenCount`, or `unreadCount` with `{ badge: "unread" }`. */
  get badgeCount() {
    return this.badge === "unread" ? this.unreadCount : this.unseenCount;
  }

  /**
   * Subscribe to an event: "ready", "notification", "updated", "read", "unread", "seen",
   * "deleted", "archived", "unarchived", "reset", "revoked", "replaced", "counts" (after
   * any event that changed `unreadCount` or `unseenCount`), or "error" (a `HeraldError`: the
   * stream was refused, and is retried; see `REFUSED`). Returns a function that unsubscribes.
   */
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name)?.delete(fn);
  }

  /**
   * `GET /notifications`: resolves to `{notifications, unread_count, unseen_count, next, position}`.
   * `archived`: "exclude" (default) | "only" | "include"; `snoozed`: "exclude" | "only";
   * `category`: a name or a list of names.
   */
  list({ limit, before, unread, unseen, archived, snoozed, category } = {}) {
    const q = new URLSearchParams();
    if (limit != null) q.set("limit", String(limit)); // a bad one (0, 500) is the server's 400
    if (before) q.set("before", before);
    if (unread) q.set("unread", "true");
    if (unseen) q.set("unseen", "true");
    if (archived) q.set("archived", archived);
    if (snoozed) q.set("snoozed", snoozed);
    const categories = [category ?? []].flat().filter(Boolean);
    if (categories.length) q.set("category", categories.join(","));
    const query = q.toString();
    return this.#request("GET", `/notifications${query ? `?${query}` : ""}`);
  }

  /** `GET /notifications/counts`: `{unread, unseen, by_category, position}`. */
  counts() {
    return this.#request("GET", "/notifications/counts");
  }

  // Each change below takes one id (resolves to the updated notification) or a list of ids
  // (one bulk request; resolves to `{updated: N}`).

  markRead(ids) {
    return this.#change(ids, { read: true });
  }

  markUnread(ids) {
    return this.#change(ids, { read: false });
  }

  markAllRead() {
    return this.#request("PATCH", "/notifications", { all: true, read: true });
  }

  /** Seen: the user has looked at it (the tray was opened); the badge counts the unseen ones. */
  markSeen(ids) {
    return this.#change(ids, { seen: true });
  }

  markAllSeen() {
    return this.#request("PATCH", "/notifications", { all: true, seen: true });
  }

  archive(ids) {
    return this.#change(ids, { archived: true });
  }

  unarchive(ids) {
    return this.#change(ids, { archived: false });
  }

  /** Out of the tray until `until` (a Date, RFC 3339 string or epoch ms); `null` wakes it now. */
  snooze(ids, until) {
    return this.#change(ids, { snoozed_until: isoTime(until) });
  }

  delete(ids) {
    return this.#change(ids, { deleted: true });
  }

  /**
   * Take one of the notification's `actions`: Herald calls the backend as the user, records the
   * outcome in the notification's `action` (`{id, at, status}`), marks it read, and every tab
   * gets `updated`. Resolves to the notification; a second take rejects with code `conflict`.
   */
  takeAction(id, actionId) {
    return this.#request("POST", `/notifications/${encodeURIComponent(id)}/actions/${encodeURIComponent(actionId)}`);
  }

  /** `GET /preferences`: `{categories: {"<category>": {muted}}}`. */
  preferences() {
    return this.#request("GET", "/preferences");
  }

  /** Mute (or unmute) a category: publishes in it are not stored for this user unless critical. */
  setMuted(category, muted) {
    return this.#request("PUT", `/preferences/categories/${encodeURIComponent(category)}`, { muted: Boolean(muted) });
  }

  close() {
    this.closed = true;
    this.#streaming = false;
    this.#unrestore?.();
    this.#unleave?.();
    this.#stopTransport();
    this.#settleWrites();
  }

  /** Let go of the transport: its stream, worker port, leader lock and channel. */
  #stopTransport() {
    for (const undo of this.cleanup.splice(0)) undo();
  }

  #change(ids, body) {
    const list = idList(ids);
    if (list) return this.#request("PATCH", "/notifications", { ids: list, ...body });
    return this.#request("PATCH", `/notifications/${encodeURIComponent(ids)}`, body);
  }

  async #request(method, path, body) {
    let response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        credentials: "include",
        headers: body ? { "content-type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (cause) {
      throw new HeraldError("Herald could not be reached", { code: "network", cause });
    }
    // The session a tray page was read as (see `Stream.join`).
    const session = response.ok && response.headers.get("x-herald-session");
    if (session) this.#signedInAs = session;
    const json = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      throw new HeraldError(json?.error?.message ?? `HTTP ${response.status}`, { status: response.status, code: json?.error?.code ?? null });
    }
    await this.#shown(response.headers.get("x-herald-position"));
    return json;
  }

  /**
   * Resolves once this tab's stream shows the tray write that left the change log at
   * `position` (its answer's `X-Herald-Position`): the write's event has reached the handlers
   * and `unreadCount` when its promise resolves. At once without a position (not a tray write)
   * or without a stream to show it (not ready yet, ended by `replaced`, closed); after
   * `WRITE_SHOWN_MS` at most.
   */
  #shown(position) {
    if (!parseId(position) || !this.#streaming || notAfter(position, this.lastId)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#settleWrites((w) => w === write), WRITE_SHOWN_MS);
      const write = { position, done: () => (clearTimeout(timer), resolve()) };
      this.#writes.push(write);
    });
  }

  /**
   * Resolve the waiting writes that `settled(write)` picks (all by default): those this tab
   * has reached after an event, and after a `reset` also those of another log (never reached).
   */
  #settleWrites(settled = () => true) {
    const done = this.#writes.filter(settled);
    if (!done.length) return;
    this.#writes = this.#writes.filter((w) => !done.includes(w));
    for (const w of done) w.done();
  }

  #counts() {
    return { unread: this.unreadCount, unseen: this.unseenCount };
  }

  /** Set the counts; true when they changed. */
  #setCounts({ unread, unseen }) {
    const changed = unread !== this.unreadCount || unseen !== this.unseenCount;
    this.unreadCount = unread;
    this.unseenCount = unseen;
    return changed;
  }

  #emit(name, data) {
    for (const fn of this.handlers.get(name) ?? []) {
      try {
        fn(data);
      } catch (err) {
        console.error("herald handler failed", err);
      }
    }
  }

  /**
   * Deliver one event to this tab's handlers, once, in order. Change events at or before this
   * tab's position in the same log were delivered already (a hand-over, a tab that joined
   * from further back, or changes its first page reflects); control events are always delivered.
   */
  #deliver(name, data, id) {
    if (this.closed) return;
    if (name === REFUSED) return this.#refused(data);
    const behind = id != null && notAfter(id, this.lastId);
    if (behind && CHANGE_EVENTS.has(name)) return; // already delivered here
    // A tab that joins a stream of another user gets `reset` from the stream too, after the
    // one this client made (below): once is enough.
    const madeReset = this.#madeResetAt;
    this.#madeResetAt = null;
    if (name === "reset" && id != null && id === madeReset) return;
    let changed;
    let then = null; // the counts as of this change, when they are not the ones shown
    // The browser signed in as someone else (in another tab) and the shared stream moved to
    // them: what this tab shows is another user's, so it gets `reset` after `ready`.
    const otherUser = name === "ready" && this.user != null && data.user !== this.user;
    if (name === "ready") {
      this.user = data.user;
      this.session = data.session;
      // A `ready` at or behind this tab (its page's position, or another tab joined from
      // further back) keeps our own counts.
      changed = !behind && this.#setCounts(nextCounts(name, data, { unread: 0, unseen: 0 }));
    } else if (CHANGE_EVENTS.has(name) && id != null && notAfter(id, this.#countedAt)) {
      // a replayed change the counts shown already reflect: they stay
      then = nextCounts(name, data, this.#counts());
      changed = false;
    } else {
      changed = this.#setCounts(nextCounts(name, data, this.#counts()));
    }
    // Move to `id` unless it is behind us in the same log. A `ready` or change of another log
    // (another user signed in, or the log restarted) replaces the old position; so does `reset`.
    if (parseId(id) && (name === "reset" || !behind)) this.lastId = id;
    if (name === "reset") this.#countedAt = null; // the log started again: every count counts
    if (this.lastId != null && !UNNUMBERED_EVENTS.has(name)) {
      savePosition(this.base, this.lastId, then ?? this.#counts());
    }
    if (name === "ready") this.#resolveReady();
    if (name === "ready" || name === "replaced") this.#streaming = name === "ready";
    this.#emit(name, data);
    if (changed) this.#emit("counts", countData(this.#counts()));
    if (this.#writes.length) {
      const tag = parseId(this.lastId)?.tag;
      const reached = (w) => notAfter(w.position, this.lastId) || (name === "reset" && parseId(w.position).tag !== tag);
      this.#settleWrites((w) => !this.#streaming || reached(w));
    }
    const stale = staleIds(name, data);
    if (stale.length) this.push.settle(stale).catch(() => {});
    // Signed out (or the token expired) for good: stop, and let go of the shared connection
    // (the leader lock, the worker port) so a tab that signs in again starts afresh.
    if (name === "revoked") {
      this.#rejectReady(new HeraldError("missing or invalid credentials", { status: 401, code: "unauthorized" }));
      this.close();
    }
    if (otherUser) {
      this.#deliver("reset", countData(this.#counts()), id);
      this.#madeResetAt = id;
    }
  }

  /**
   * The stream was refused (see `REFUSED`): the app hears why; before the first `ready`,
   * `connect` rejects with it and this client stops (it holds nothing the app could close).
   */
  #refused({ status, code, message }) {
    const error = new HeraldError(message, { status, code });
    this.#emit(REFUSED, error);
    if (this.user != null) return; // a `ready` (which names the user) resolved `connect`
    this.#rejectReady(error);
    this.close();
  }

  /**
   * Back from the back/forward cache (`pageshow` with `persisted`): the transport was let go
   * of when the page was hidden (the leader's stream, lock and channel; the worker told
   * `bye`), so `start` runs it again, from this tab's position. One listener per `Herald`,
   * for its latest transport.
   */
  #restore(start) {
    const restored = (e) => {
      if (!e.persisted || this.closed) return;
      this.#stopTransport();
      start();
    };
    this.#unrestore?.();
    addEventListener("pageshow", restored);
    this.#unrestore = () => removeEventListener("pageshow", restored);
  }

  /** Where this tab starts: its `lastId` (set from the first page) with its counts, and the
   * session its cookie was of then. */
  #position() {
    const position = this.lastId != null ? { id: this.lastId, ...this.#counts() } : loadPosition(this.base);
    return position && this.#signedInAs ? { ...position, session: this.#signedInAs } : position;
  }

  #start(transport, { tab = null } = {}) {
    this.transport = transport;
    this.#restore(() => this.#start(transport, { tab }));
    const deliver = (name, data, id) => this.#deliver(name, data, id);
    if (transport === "shared-worker") return this.#startSharedWorker(deliver);
    if (transport === "leader") return this.#startLeader(deliver, tab);
    const position = this.#position();
    const own = ownTab(this.base);
    const stream = new Stream({ base: this.base, lastEventId: position?.id, unread: position?.unread, unseen: position?.unseen, tab: own, checkEvery: this.checkEvery, onEvent: deliver });
    stream.start();
    this.cleanup.push(() => {
      stream.close();
      tabsHeld.delete(own);
    });
  }

  #startSharedWorker(deliver) {
    const url = new URL(`${this.base}/herald-worker.js`, location.href);
    let port = null;
    // When the worker was last heard from, and whether it says `alive` at all (a worker of
    // an older herald.js, kept running by a tab opened before a deploy, does not: no watchdog
    // then). A monotonic clock: a wall clock jumps.
    let heard = 0;
    let says = false;
    const bye = () => port?.postMessage({ type: MSG.BYE });
    // A worker whose script fails to load (a CSP `worker-src`, a proxy that does not pass
    // `herald-worker.js`, or holds it: `WORKER_START_MS`) never answers: the tab shares the
    // stream through a leader tab (or holds its own) rather than wait for it. That stream is named (`?tab=`), so that it and
    // the worker's stream of tabs whose worker did load don't replace each other.
    const fallBack = (cause) => {
      if (this.closed) return;
      console.warn("herald: the SharedWorker did not start; sharing the stream another way", cause);
      stop();
      const next = pickTransport(this.base, { sharedWorker: false });
      this.#start(next, { tab: next === "leader" ? FALLBACK_LEADER_TAB : null });
    };
    const connect = () => {
      const old = port;
      let worker;
      try {
        worker = new SharedWorker(url, { type: "module", name: scoped("", this.base) });
      } catch (cause) {
        queueMicrotask(() => fallBack(cause)); // some engines throw for a CSP refusal
        return;
      }
      const mine = worker.port;
      let answered = false;
      const failed = (cause) => {
        if (!answered && port === mine) fallBack(cause);
      };
      worker.onerror = failed;
      const starting = setTimeout(() => failed(new Error(`no answer in ${WORKER_START_MS} ms`)), WORKER_START_MS);
      port = mine;
      heard = performance.now();
      port.onmessage = (m) => {
        answered = true;
        clearTimeout(starting);
        heard = performance.now();
        if (m.data?.type === MSG.ALIVE) says = true;
        if (m.data?.type === MSG.EVENT) deliver(m.data.name, m.data.data, m.data.id);
      };
      port.start();
      // From this tab's position: a new worker resumes from it, a live one brings it up to date.
      port.postMessage({ type: MSG.HELLO, base: this.base, position: this.#position(), checkEvery: this.checkEvery });
      old?.postMessage({ type: MSG.BYE });
      old?.close();
    };
    connect();
    let checked = performance.now();
    const watchdog = setInterval(() => {
      const now = performance.now();
      // A check that comes late (the tab was frozen, the machine slept) may run before the
      // messages that waited meanwhile: it listens again instead of taking the worker for gone.
      const late = now - checked > 2 * WORKER_ALIVE_MS;
      checked = now;
      if (late) heard = now;
      else if (says && now - heard > WORKER_SILENT_MS) connect();
    }, WORKER_ALIVE_MS);
    addEventListener("pagehide", bye);
    const stop = () => {
      clearInterval(watchdog);
      removeEventListener("pagehide", bye);
      bye();
      port?.close();
      // A worker that had not answered yet must not make this transport fall back now (a
      // restored page has started another): its start timer checks this.
      port = null;
      this.cleanup = this.cleanup.filter((undo) => undo !== stop);
    };
    this.cleanup.push(stop);
  }

  /** `tab`: the `?tab=` of the leader's stream (none, unless the SharedWorker failed). */
  #startLeader(deliver, tab) {
    const name = scoped("", this.base);
    const channel = new BroadcastChannel(name);
    let stream = null;
    // Until the leader answers this tab's hello, relayed events may be ahead of this tab (it
    // reloaded): taking one would skip the replay the answer brings. The answer starts with
    // `joined` naming this tab's hello, so a `ready` the leader sent for another tab (or for
    // its own stream's reconnect) does not count. A leader of an older herald.js sends no
    // `joined` and no `v` on its events: then its first `ready` counts, as it did.
    let joined = false;
    const me = randomId();
    const hello = () => channel.postMessage({ type: MSG.HELLO, position: this.#position(), from: me });
    let release;
    const released = new Promise((resolve) => (release = resolve));
    channel.onmessage = (m) => {
      const msg = m.data;
      // Events from the leader. `revoked` counts even when this tab has just become the leader
      // itself: the old leader lets go of the lock when it is revoked, and the lock can reach
      // this tab before the relayed `revoked` does.
      if (msg?.type === MSG.JOINED && msg.to === me) joined = true;
      if (msg?.type === MSG.EVENT && msg.name === "ready" && !msg.v) joined = true;
      // An event `to` another tab answers that tab's hello.
      const mine = !msg?.to || msg.to === me;
      if (msg?.type === MSG.EVENT && mine && ((!stream && joined) || msg.name === "revoked")) deliver(msg.name, msg.data, msg.id);
      // A follower joins: the leader brings it up to date (see Stream.join), starting again a
      // stream the server ended with `replaced` (see Stream.reopen).
      if (msg?.type === MSG.HELLO && stream) {
        channel.postMessage({ type: MSG.JOINED, to: msg.from });
        const relay = (name, data, id) => channel.postMessage({ type: MSG.EVENT, name, data, id, v: 2, to: msg.from });
        if (stream.endedBy === "replaced") stream.reopen(msg.position, relay);
        else stream.join(msg.position, relay);
      }
      // A new leader: a hello this tab sent while no tab held the stream (the lock between two
      // tabs) reached no one, so say it again.
      if (msg?.type === MSG.LEADER && !stream && !joined) hello();
    };
    // Let go of when the page is hidden (also into the back/forward cache, from which
    // `#restore` starts the transport anew).
    let hidden = false;
    navigator.locks.request(`${name}:leader`, () => {
      if (this.closed || hidden) return;
      const position = this.#position();
      stream = new Stream({
        base: this.base,
        checkEvery: this.checkEvery,
        lastEventId: position?.id,
        unread: position?.unread,
        unseen: position?.unseen,
        tab,
        onEvent: (n, data, id) => {
          channel.postMessage({ type: MSG.EVENT, name: n, data, id, v: 2 });
          deliver(n, data, id);
        },
      });
      stream.start();
      channel.postMessage({ type: MSG.LEADER });
      return released; // hold the lock until this tab closes
    });
    hello();
    const stop = () => {
      hidden = true;
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

// ---------- Web Push: `h.push` ----------
//
// `enable()` asks permission, registers the service worker `<base>/herald-sw.js` (scope
// `<base>/`), subscribes with Herald's key (`GET /push/key`) and posts the subscription;
// `disable()` unsubscribes, deletes it and unregisters the worker; `enabled()` tells whether
// this browser has one; `available()` whether the server has Web Push on. A notification the worker shows is closed
// when this tab's stream reports it read, seen, archived, snoozed or deleted (`settle`). The
// worker takes the scope `<base>/`: a site with a service worker of its own there can't use both.

/** The ids whose shown push notification event `name` makes stale (handled elsewhere). */
function staleIds(name, data) {
  if (name === "read" || name === "seen" || name === "archived" || name === "deleted") return data?.ids ?? [];
  if (name === "updated" && (data.read_at || data.seen_at || data.archived_at || data.snoozed_until)) return [data.id];
  if (name === "notification" && data.replaces) return [data.replaces];
  return [];
}

const PUSH_ERRORS = {
  unsupported: "This browser can't show notifications from this site.",
  push_off: "Notifications on this device aren't available on this site.",
  denied: "Notifications are blocked for this site. Allow them in the browser's site settings, then try again.",
  dismissed: "Notifications weren't allowed. Try again and choose Allow.",
  push_failed: "This browser couldn't set up notifications for this site. Try again later.",
  push_refused: "This site doesn't accept notifications through this browser's push service.",
};
const pushError = (code, cause) =>
  new HeraldError(PUSH_ERRORS[code], { code: code === "denied" || code === "dismissed" ? "permission_denied" : code, cause });

/** base64url (padded or not) as bytes. */
const fromBase64Url = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
/** A subscription's `applicationServerKey` is `key` (bytes); true when the browser doesn't say. */
const madeFor = (subscription, key) => {
  const made = subscription.options?.applicationServerKey;
  return !made || new Uint8Array(made).join() === key.join();
};

/** Resolves once `registration` has an active worker (a push subscription needs one). */
function activated(registration) {
  const worker = registration.installing ?? registration.waiting;
  if (registration.active || !worker) return Promise.resolve();
  return new Promise((resolve, reject) => worker.addEventListener("statechange", () => {
    if (worker.state === "activated") resolve();
    if (worker.state === "redundant") reject(new Error("the service worker failed to install"));
  }));
}

export class Push {
  #base;
  #request;
  #key = null;
  #off = false;
  /** How long `enable()` waits for the browser's push service, in ms (one that has none can hang). */
  subscribeTimeout = 20_000;

  constructor(base, request) {
    this.#base = base;
    this.#request = request;
  }

  /** Web Push works here: a secure page with service workers, PushManager and Notification. */
  get supported() {
    return Boolean(globalThis.isSecureContext && globalThis.navigator?.serviceWorker && globalThis.PushManager && globalThis.Notification);
  }

  /** Whether the server has Web Push on (false when `GET /push/key` is 404). */
  async available() {
    if (this.#off) return false;
    try {
      await this.#publicKey();
      return true;
    } catch (e) {
      if (e.code === "push_off") return false;
      throw e;
    }
  }

  /** True when this browser has a push subscription for this site (for Herald's current key). */
  async enabled() {
    if (!this.supported || Notification.permission !== "granted") return false;
    const subscription = await this.#subscription();
    const key = subscription && (await this.#publicKey().catch(() => null));
    return Boolean(subscription) && (!key || madeFor(subscription, fromBase64Url(key)));
  }

  /**
   * Ask permission, subscribe this browser and register it with Herald; resolves to true.
   * Rejects with a `HeraldError` in words for people, code `unsupported`, `push_off`,
   * `permission_denied`, `push_failed` or `push_refused` (the endpoint is not on a push service
   * the server allows), or the server's other refusal. Call it from a click.
   */
  async enable() {
    if (!this.supported) throw pushError("unsupported");
    if (this.#off) throw pushError("push_off");
    const key = this.#publicKey();
    key.catch(() => {}); // awaited below
    // Before anything else is awaited: browsers show the prompt only for the click's task.
    const permission = await Notification.requestPermission();
    if (permission !== "granted") throw pushError(permission === "denied" ? "denied" : "dismissed");
    const applicationServerKey = fromBase64Url(await key);
    let subscription;
    try {
      const registration = await navigator.serviceWorker.register(`${this.#base}/herald-sw.js`, { scope: `${this.#base}/` });
      await activated(registration);
      subscription = await registration.pushManager.getSubscription();
      if (subscription && !madeFor(subscription, applicationServerKey)) {
        await subscription.unsubscribe(); // Herald's key changed: the old one is useless
        subscription = null;
      }
      subscription ??= await this.#subscribe(registration, applicationServerKey);
    } catch (cause) {
      throw pushError("push_failed", cause);
    }
    try {
      await this.#request("POST", "/push/subscriptions", subscription.toJSON());
    } catch (e) {
      await subscription.unsubscribe().catch(() => {}); // not half on
      throw e.status === 400 ? pushError("push_refused", e) : e;
    }
    return true;
  }

  /**
   * Undo `enable()`: unsubscribe this browser, delete it from Herald, close the notifications
   * Herald's service worker shows and unregister it; resolves to false when it had no
   * subscription.
   */
  async disable() {
    const registration = this.supported ? await this.#registration() : null;
    const subscription = (await registration?.pushManager.getSubscription()) ?? null;
    if (subscription) {
      const { endpoint } = subscription;
      await subscription.unsubscribe();
      // Off on this device whatever the server answers (signed out, say): the push service
      // then answers 410 for the endpoint and Herald drops it.
      await this.#request("DELETE", "/push/subscriptions", { endpoint }).catch(() => {});
    }
    // Its notifications would no longer answer a click. Only Herald's worker: a site's own
    // worker at the same scope is the site's.
    if (registration?.active?.scriptURL?.endsWith("/herald-sw.js")) {
      try {
        for (const n of await registration.getNotifications()) n.close();
        await registration.unregister();
      } catch {
        // another tab did it meanwhile
      }
    }
    return Boolean(subscription);
  }

  /** Close the notifications of `ids` that the service worker shows. */
  async settle(ids) {
    if (!this.supported || Notification.permission !== "granted") return;
    (await this.#registration())?.active?.postMessage({ type: "herald:read", ids });
  }

  #subscribe(registration, applicationServerKey) {
    const subscribing = registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
    let timer;
    const timeout = new Promise((_, reject) => (timer = setTimeout(() => {
      subscribing.then((late) => late.unsubscribe(), () => {}); // a late one must not stay behind
      reject(new Error(`the push service did not answer in ${this.subscribeTimeout} ms`));
    }, this.subscribeTimeout)));
    return Promise.race([subscribing, timeout]).finally(() => clearTimeout(timer));
  }

  #publicKey() {
    this.#key ??= this.#request("GET", "/push/key").then(
      (body) => body.public_key,
      (e) => {
        this.#key = null;
        if (e.status !== 404) throw e;
        this.#off = true;
        throw pushError("push_off", e);
      },
    );
    return this.#key;
  }

  /** Herald's registration (exactly its scope: not a site worker that covers it). */
  async #registration() {
    const scope = new URL(`${this.#base}/`, location.href).href;
    const registration = await navigator.serviceWorker.getRegistration(scope);
    return registration?.scope === scope ? registration : null;
  }

  async #subscription() {
    if (!this.supported) return null;
    return (await (await this.#registration())?.pushManager.getSubscription()) ?? null;
  }
}

export default Herald;
