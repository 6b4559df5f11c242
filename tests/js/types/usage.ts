// A typed tour of herald.js through its declarations (static/herald.d.ts): every export, method,
// option and event payload. Type-checked only (`tsc --noEmit -p tests/js/types`), never run.
// Lines marked @ts-expect-error must stay errors: they prove the declarations refuse misuse.

import Herald, {
  Herald as NamedHerald,
  HeraldError,
  Push,
  forgetPosition,
  type BulkResult,
  type ChangeEvent,
  type ConnectedHerald,
  type Counts,
  type CountsResponse,
  type HeraldErrorCode,
  type HeraldEventName,
  type Notification,
  type NotificationPage,
  type Preferences,
} from "herald-client";
import { MSG, Stream, loadPosition, nextCounts, parseId, startPosition } from "herald-client";

const sameClass: typeof Herald = NamedHerald;

export async function tour(): Promise<void> {
  const h: ConnectedHerald = await Herald.connect({ base: "https://herald.example.com", badge: "unread", limit: 50 });
  await sameClass.connect();
  await Herald.connect({ transport: "leader" });
  // @ts-expect-error: badge is "unseen" or "unread"
  await Herald.connect({ badge: "all" });

  // State kept current from every event.
  const page: NotificationPage = h.page;
  const first: Notification | undefined = page.notifications[0];
  const next: string | null = page.next;
  const position: string = page.position;
  const counts: number = h.unreadCount + h.unseenCount + h.badgeCount;
  const who: string = h.user;
  const session: string | null = h.session;
  const last: string | null = h.lastId;
  const base: string = h.base;
  const closed: boolean = h.closed;
  void [next, position, counts, who, session, last, base, closed, h.transport, h.badge];

  // Events and their payloads.
  const off = h.on("notification", (n) => {
    const title: string = n.title;
    const unread: number = n.unread_count;
    const replaces: string | null = n.replaces;
    const link: string | null = n.link;
    const taken = n.action?.status;
    const method = n.actions[0]?.method;
    void [title, unread, replaces, link, taken, method, n.data?.["build"], n.critical, n.count];
  });
  off();
  h.on("updated", (n) => void n.snoozed_until);
  const change = (e: ChangeEvent) => {
    const ids: string[] = e.ids;
    const expired: boolean = e.reason === "expired";
    void [ids, expired, e.unread_count, e.unseen_count];
  };
  for (const name of ["read", "unread", "seen", "archived", "unarchived", "deleted"] as const) h.on(name, change);
  h.on("counts", ({ unread_count, unseen_count }: Counts) => void (unread_count + unseen_count));
  h.on("reset", (c) => void c.unseen_count);
  h.on("ready", ({ user, session: s, unread_count }) => void [user, s, unread_count]);
  h.on("revoked", ({ reason }) => {
    const why: "logout" | "expired" | "unauthorized" = reason;
    if (why === "logout") forgetPosition(h.base);
  });
  h.on("replaced", () => {});
  // @ts-expect-error: no such event
  h.on("notifications", () => {});
  // @ts-expect-error: a read event carries ids, not a notification
  h.on("read", (n: Notification) => void n);
  const names: HeraldEventName[] = ["ready", "counts", "revoked"];
  void names;

  // The tray.
  const older: NotificationPage = await h.list({ limit: 20, before: next ?? undefined, unread: true });
  await h.list({ unseen: true, archived: "only", snoozed: "only", category: ["ci", "ops"] });
  await h.list({ category: "ci", archived: "include" });
  // @ts-expect-error: archived is "exclude", "only" or "include"
  await h.list({ archived: "all" });
  const c: CountsResponse = await h.counts();
  const ciUnread: number | undefined = c.by_category["ci"]?.unread;
  void [older, ciUnread, c.unread, c.unseen, c.position];

  // Changes: one id gives the notification, a list one bulk answer.
  const id = first?.id ?? "01J";
  const one: Notification = await h.markRead(id);
  const bulk: BulkResult = await h.markRead([id, "01K"]);
  const either: Notification | BulkResult = await h.markRead(Math.random() > 0.5 ? id : [id]);
  void [one, bulk.updated, either];
  await h.markUnread(id);
  const all: number = (await h.markAllRead()).updated;
  await h.markSeen([id]);
  await h.markAllSeen();
  await h.archive(id);
  await h.unarchive([id]);
  const snoozed: Notification = await h.snooze(id, new Date(Date.now() + 3600e3));
  await h.snooze([id], "2030-01-01T00:00:00Z");
  await h.snooze(id, Date.now() + 60_000);
  await h.snooze(id, null);
  const gone: null = await h.delete(id);
  await h.delete([id]);
  const acted: Notification = await h.takeAction(id, "approve");
  const prefs: Preferences = await h.preferences();
  const muted: boolean | undefined = (await h.setMuted("marketing", true)).categories["marketing"]?.muted;
  void [all, snoozed, gone, acted.action?.at, prefs, muted];
  // @ts-expect-error: snooze needs a time (or null)
  await h.snooze(id);
  // @ts-expect-error: ids are strings
  await h.markRead(42);

  // Errors.
  try {
    await h.markRead("nope");
  } catch (e) {
    if (e instanceof HeraldError) {
      const status: number = e.status;
      const code: HeraldErrorCode | null = e.code;
      if (code === "not_found" || code === "network" || code === "conflict") void status;
      void [e.message, e.name, e.cause];
    }
  }
  const made = new HeraldError("refused", { status: 409, code: "conflict" });
  // @ts-expect-error: not a code Herald sends
  new HeraldError("x", { code: "teapot" });
  void made;

  // Web Push on this device.
  const push: Push = h.push;
  if (push.supported && (await push.available())) {
    const on: boolean = await push.enabled();
    if (!on) {
      const enabled: true = await push.enable();
      void enabled;
    }
    const had: boolean = await push.disable();
    void had;
  }
  push.subscribeTimeout = 10_000;
  await push.settle([id]);

  h.close();
  forgetPosition();
}

// What herald-worker.js shares with the client.
export function worker(): void {
  const hello: "hello" = MSG.HELLO;
  const saved = loadPosition("");
  const from: string | null = startPosition(saved, "3f9a0c12d4e1.4");
  const parsed = parseId(from);
  const seq: number | undefined = parsed?.seq;
  const after = nextCounts("read", { unread_count: 1, unseen_count: 0 }, { unread: 2, unseen: 1 });
  const stream = new Stream({
    base: "",
    lastEventId: saved?.id,
    unread: saved?.unread,
    unseen: saved?.unseen,
    onEvent: (name, data, eventId) => void [name, data, eventId],
  });
  stream.start();
  stream.join(saved, (name, data, eventId) => void [name, data, eventId]);
  stream.restart("3f9a0c12d4e1.2", after);
  const unread: number = stream.unreadCount;
  stream.close();
  void [hello, seq, unread];
}
