// Type declarations for herald.js, the Herald browser client (ES module). Kept exact by
// `tsc --noEmit -p tests/js/types` in scripts/test, which type-checks tests/js/types/usage.ts
// against this file. The API itself: docs/api.md ("Browser client") and docs/client.md.

// ---------- What the server sends ----------

/** One of a notification's action buttons, as published. */
export interface NotificationAction {
  id: string;
  label: string;
  /** Upper case; `POST` when a `path` was published without one. Absent without a path. */
  method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Under `/api/`; absent for an action that is only recorded. */
  path?: string;
}

/** The action the user took on a notification, recorded once. */
export interface TakenAction {
  id: string;
  /** RFC 3339. */
  at: string;
  /** The upstream's answer status; `null` when the action had no path. */
  status: number | null;
}

/** A notification as Herald stores and sends it: every member present, `null` when unset. Times are RFC 3339 (UTC). */
export interface Notification {
  id: string;
  user: string;
  title: string;
  body: string | null;
  source: string | null;
  category: string | null;
  link: string | null;
  data: Record<string, unknown> | null;
  /** Preferences cannot mute it. */
  critical: boolean;
  collapse_key: string | null;
  deliver_at: string | null;
  expires_at: string | null;
  actions: NotificationAction[];
  created_at: string;
  read_at: string | null;
  seen_at: string | null;
  archived_at: string | null;
  snoozed_until: string | null;
  action: TakenAction | null;
  /** How many publishes it stands for (collapse); 1 otherwise. */
  count: number;
  /** The id it replaced (collapse): drop that one. */
  replaces: string | null;
}

/** The user's counts of active notifications, carried by every event. */
export interface Counts {
  unread_count: number;
  unseen_count: number;
}

/** `ready`: the stream is open (the counts are the stream's, replay included). */
export interface ReadyEvent extends Counts {
  user: string;
  /** The session's public id; `null` for a Bearer token without `sid`. */
  session: string | null;
}

/** `notification` (new, delivered at `deliver_at`, back from a snooze) and `updated` (after an action or a snooze). */
export type NotificationEvent = Notification & Counts;

/** `read`, `unread`, `seen`, `archived`, `unarchived`, `deleted`: which notifications, and the counts after. */
export interface ChangeEvent extends Counts {
  ids: string[];
  /** `deleted` at `expires_at`. */
  reason?: "expired";
}

/**
 * `revoked`: signed out (`DELETE /session` in any tab), the token expired, or a reconnect was
 * refused with 401 (`unauthorized`: the session or token is gone); the stream stops for good.
 */
export interface RevokedEvent {
  reason: "logout" | "expired" | "unauthorized";
}

/** `replaced`: a newer stream of the same session took over (no payload). */
export type ReplacedEvent = Record<string, never>;

/** What each event name delivers to `h.on(name, fn)`. */
export interface HeraldEventMap {
  ready: ReadyEvent;
  notification: NotificationEvent;
  updated: NotificationEvent;
  read: ChangeEvent;
  unread: ChangeEvent;
  seen: ChangeEvent;
  archived: ChangeEvent;
  unarchived: ChangeEvent;
  deleted: ChangeEvent;
  /** The log this tab followed is gone (another user, a lost log): refetch the tray. */
  reset: Counts;
  revoked: RevokedEvent;
  replaced: ReplacedEvent;
  /** Emitted by the client after any event that changed `unreadCount` or `unseenCount`. */
  counts: Counts;
  /**
   * Emitted by the client when the server refused the stream with anything but 401 (429
   * `too_many_streams`, 503; status 0 when asking why got no answer), once per run of
   * refusals: it retries with backoff. Before the first `ready`, `connect` rejects with this
   * error instead. (A stream that drops is reopened by the browser itself, without an error.)
   */
  error: HeraldError;
}

export type HeraldEventName = keyof HeraldEventMap;

/** Why a `Stream` was refused (its `"error"`), as a `HeraldError` has it. */
export interface StreamRefusal {
  status: number;
  code: HeraldErrorCode | null;
  message: string;
}

/** The events of the `/events` stream itself (all of the map but `counts`; `error` as a `StreamRefusal`). */
export type StreamEventName = Exclude<HeraldEventName, "counts">;

/** `GET /notifications`: one page, newest first. */
export interface NotificationPage extends Counts {
  notifications: Notification[];
  /** Pass as `before` for the next page; `null` on the last. */
  next: string | null;
  /** The change-log head the page reflects (`<tag>.<seq>`). */
  position: string;
}

/** `GET /notifications/counts`. */
export interface CountsResponse {
  unread: number;
  unseen: number;
  by_category: Record<string, { unread: number; unseen: number }>;
  position: string;
}

/** `GET /preferences`, and the answer to `setMuted`. */
export interface Preferences {
  categories: Record<string, { muted: boolean }>;
}

/** A bulk change's answer: how many notifications changed state. */
export interface BulkResult {
  updated: number;
}

// ---------- The client ----------

/** What `h.badgeCount` counts. */
export type Badge = "unseen" | "unread";

/** How tabs share one stream: a SharedWorker, a leader tab (Web Locks + BroadcastChannel), or one per tab. */
export type Transport = "shared-worker" | "leader" | "tab";

export interface ConnectOptions {
  /** Herald's URL (`""`, the default: this page's origin), with its `--base-path`. */
  base?: string | undefined;
  /** Picked from what the browser supports when not given. */
  transport?: Transport | undefined;
  /** Default `"unseen"`. */
  badge?: Badge | undefined;
  /** Notifications loaded as `h.page` before streaming (default 20, at most 200). */
  limit?: number | undefined;
  /**
   * How long the stream may hear nothing before it checks that it is not behind, in ms
   * (default 60000, at least 1000): a connection that died without a word (a NAT or a proxy
   * dropped it) is replaced then, and the stream resumes from its last event.
   */
  checkEvery?: number | undefined;
}

export interface ListOptions {
  /** 1–200 (the server's default: 50). */
  limit?: number | undefined;
  /** A page's `next`. */
  before?: string | undefined;
  unread?: boolean | undefined;
  unseen?: boolean | undefined;
  /** Default `"exclude"`. */
  archived?: "exclude" | "only" | "include" | undefined;
  /** Default `"exclude"`. */
  snoozed?: "exclude" | "only" | undefined;
  /** One category or several (at most 64). */
  category?: string | readonly string[] | undefined;
}

/** A time for the server: a Date, an RFC 3339 string or milliseconds since the epoch. */
export type TimeInput = Date | string | number;

/** A connected client: `connect` resolves once the page is loaded and the stream is ready. */
export type ConnectedHerald = Herald & { page: NotificationPage; user: string };

export class Herald {
  /**
   * Load the tray's first page (`h.page`), then stream from its position. Resolves at the
   * stream's `ready`; rejects with a `HeraldError` when the browser is not signed in (status
   * 401), or when the page or the stream is refused (429 `too_many_streams`, 503, …).
   */
  static connect(options?: ConnectOptions): Promise<ConnectedHerald>;

  /** Use `Herald.connect`; the constructor alone neither loads nor streams. Throws a TypeError for another `badge`. */
  constructor(base: string, options?: { badge?: Badge | undefined });

  /** Herald's URL without a trailing slash. */
  base: string;
  badge: Badge;
  /** Active unread notifications, kept current from every event. */
  unreadCount: number;
  /** Active unseen notifications, kept current from every event. */
  unseenCount: number;
  /** `unseenCount`, or `unreadCount` with `{ badge: "unread" }`. */
  readonly badgeCount: number;
  /** The first page `connect` loaded. */
  page: NotificationPage | null;
  /** From `ready`. */
  user: string | null;
  /** The session's public id, from `ready`. */
  session: string | null;
  transport: Transport | null;
  /** The last event id delivered to this tab (`<tag>.<seq>`); the page's position before `ready`. */
  lastId: string | null;
  /** True after `close()` or `revoked`. */
  closed: boolean;
  /** Web Push on this device. */
  push: Push;
  /** The subscribed handlers, by event name (use `on`). */
  handlers: Map<string, Set<(data: never) => void>>;
  /** What `close()` undoes. */
  cleanup: Array<() => void>;

  /** Subscribe to an event; returns a function that unsubscribes. A throwing handler is logged, the others still run. */
  on<K extends HeraldEventName>(name: K, fn: (data: HeraldEventMap[K]) => void): () => void;

  /** `GET /notifications`. */
  list(options?: ListOptions): Promise<NotificationPage>;
  /** `GET /notifications/counts`. */
  counts(): Promise<CountsResponse>;

  // One id: resolves to the notification. A list: one bulk request, resolves to `{updated}`.
  // Each change method resolves once this tab's stream shows the change (its event handled,
  // the counts updated; 1.5 s at most, for a stream that is reconnecting).
  markRead(id: string): Promise<Notification>;
  markRead(ids: readonly string[]): Promise<BulkResult>;
  markRead(ids: string | readonly string[]): Promise<Notification | BulkResult>;
  markUnread(id: string): Promise<Notification>;
  markUnread(ids: readonly string[]): Promise<BulkResult>;
  markUnread(ids: string | readonly string[]): Promise<Notification | BulkResult>;
  markAllRead(): Promise<BulkResult>;
  /** Seen: the user has looked at it (the tray was opened). */
  markSeen(id: string): Promise<Notification>;
  markSeen(ids: readonly string[]): Promise<BulkResult>;
  markSeen(ids: string | readonly string[]): Promise<Notification | BulkResult>;
  markAllSeen(): Promise<BulkResult>;
  archive(id: string): Promise<Notification>;
  archive(ids: readonly string[]): Promise<BulkResult>;
  archive(ids: string | readonly string[]): Promise<Notification | BulkResult>;
  unarchive(id: string): Promise<Notification>;
  unarchive(ids: readonly string[]): Promise<BulkResult>;
  unarchive(ids: string | readonly string[]): Promise<Notification | BulkResult>;
  /** Out of the tray until `until`; `null` wakes it now. Throws a TypeError for a time that is not one. */
  snooze(id: string, until: TimeInput | null): Promise<Notification>;
  snooze(ids: readonly string[], until: TimeInput | null): Promise<BulkResult>;
  snooze(ids: string | readonly string[], until: TimeInput | null): Promise<Notification | BulkResult>;
  /** One id: resolves to `null` (204). */
  delete(id: string): Promise<null>;
  delete(ids: readonly string[]): Promise<BulkResult>;
  delete(ids: string | readonly string[]): Promise<null | BulkResult>;
  /** Take one of the notification's actions, once (again: code `conflict`); resolves to the notification, `action` set. */
  takeAction(id: string, actionId: string): Promise<Notification>;
  /** `GET /preferences`. */
  preferences(): Promise<Preferences>;
  /** Mute or unmute a category; resolves to the whole preferences. */
  setMuted(category: string, muted: boolean): Promise<Preferences>;
  /** Stop this tab's stream (or its share of the shared one). */
  close(): void;
}

export default Herald;

/** The codes a `HeraldError` carries: the error body's, `network`, or one of `h.push.enable()`'s. */
export type HeraldErrorCode =
  | "network"
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "request_timeout"
  | "too_large"
  | "too_many_streams"
  | "rate_limited"
  | "bad_gateway"
  | "gateway_timeout"
  | "unavailable"
  | "internal"
  | "unsupported"
  | "push_off"
  | "permission_denied"
  | "push_failed"
  | "push_refused";

/** A refused request: `status` (0 when Herald could not be reached), `code`, and the server's `message`. */
export class HeraldError extends Error {
  constructor(message: string, options?: { status?: number | undefined; code?: HeraldErrorCode | null | undefined; cause?: unknown });
  name: "HeraldError";
  status: number;
  code: HeraldErrorCode | null;
}

/** Web Push on this device (`h.push`); needs the service worker `<base>/herald-sw.js`. */
export class Push {
  constructor(base: string, request: (method: string, path: string, body?: unknown) => Promise<unknown>);
  /** How long `enable()` waits for the browser's push service, in ms (default 20 000). */
  subscribeTimeout: number;
  /** A secure page with service workers, PushManager and Notification. */
  readonly supported: boolean;
  /** Whether the server has Web Push on (false when `GET /push/key` is 404). */
  available(): Promise<boolean>;
  /** Whether this browser has a push subscription for this site (for Herald's current key). */
  enabled(): Promise<boolean>;
  /**
   * Ask permission, subscribe and register with Herald. Call it from a click. Rejects with a
   * `HeraldError`: `unsupported`, `push_off`, `permission_denied`, `push_failed`,
   * `push_refused`, or the server's other refusal.
   */
  enable(): Promise<true>;
  /**
   * Unsubscribe, delete it from Herald and unregister `herald-sw.js` (closing what it shows);
   * false when there was no subscription.
   */
  disable(): Promise<boolean>;
  /** Close the notifications of `ids` that the service worker shows. */
  settle(ids: readonly string[]): Promise<void>;
}

/** Sign-out: forget this browser's stream position for `base` (default `""`), so the next user does not resume from it. */
export function forgetPosition(base?: string): void;

// ---------- Shared with herald-worker.js (not needed by apps) ----------

/** `{ unread, unseen }`, as the client keeps them. */
export interface CountPair {
  unread: number;
  unseen: number;
}

/** Where this tab (sessionStorage) or this browser (localStorage) last was: the last event id and the counts then. */
export interface SavedPosition {
  id: string;
  unread?: number | undefined;
  unseen?: number | undefined;
  /** When it was stored (Unix ms): a new tab resumes from the browser's only within `RESUME_WITHIN_MS`. */
  at?: number | undefined;
}

/** How recent the browser's stored position must be for a new tab to resume from it, in ms. */
export const RESUME_WITHIN_MS: number;

/** Messages between tabs, the leader and the SharedWorker. */
export const MSG: Readonly<{ HELLO: "hello"; EVENT: "event"; BYE: "bye"; LEADER: "leader"; ALIVE: "alive" }>;
/** How often the SharedWorker tells its tabs it is alive, in ms. */
export const WORKER_ALIVE_MS: number;

/** The counts after event `name` with `data`. */
export function nextCounts(
  name: string,
  data: Partial<Counts> & { read_at?: string | null; seen_at?: string | null; replaces?: string | null },
  counts: CountPair,
): CountPair;

/** An event id `<tag>.<seq>` as `{ tag, seq }`; `null` for anything else. */
export function parseId(id: unknown): { tag: string; seq: number } | null;

/** Where to stream from, given the stored position and the first page's `position`. */
export function startPosition(saved: SavedPosition | null | undefined, position: string | null | undefined): string | null;

/** The stored position for `base` (this tab's, else the browser's when recent), or `null`. */
export function loadPosition(base: string): SavedPosition | null;

export interface StreamOptions {
  base?: string | undefined;
  lastEventId?: string | null | undefined;
  unread?: number | null | undefined;
  unseen?: number | null | undefined;
  /** `?tab=`: one stream per tab (the per-tab fallback). */
  tab?: string | null | undefined;
  onEvent: (name: StreamEventName, data: Exclude<HeraldEventMap[StreamEventName], HeraldError> | StreamRefusal, id: string | null) => void;
}

/** One `/events` connection with resume and reconnect (the SharedWorker, the leader tab, the per-tab fallback). */
export class Stream {
  constructor(options: StreamOptions);
  base: string;
  lastEventId: string | null | undefined;
  counts: CountPair;
  tab: string | null;
  onEvent: StreamOptions["onEvent"];
  /** The last `ready`, with this stream's counts. */
  ready: ReadyEvent | null;
  closed: boolean;
  source: EventSource | null;
  /** The next wait before reconnecting after a refusal, in ms. */
  backoff: number;
  /** Why the server refuses this stream, from its first refusal until a `ready`. */
  refused: StreamRefusal | null;
  timer: ReturnType<typeof setTimeout> | null;
  readonly unreadCount: number;
  start(): void;
  /** Reconnect from an earlier position. */
  restart(lastEventId: string | null | undefined, counts?: CountPair): void;
  /** Bring a tab that joins at `position` up to date (`ready`, `reset`, why the stream is refused, or a resume from further back). */
  join(
    position: SavedPosition | null | undefined,
    send: (name: "ready" | "reset" | "error", data: ReadyEvent | Counts | StreamRefusal, id: string | null | undefined) => void,
  ): void;
  close(): void;
}
