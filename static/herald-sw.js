// Herald's service worker for Web Push (classic script). `h.push.enable()` registers it as
// `<base>/herald-sw.js` with scope `<base>/`; Herald's endpoints are resolved against the
// script's own URL, so it works under a path prefix too.
//
// - push: shows the notification (tag = its id: a repeat replaces it instead of stacking).
// - notificationclick: closes it, marks it read (`PATCH <base>/notifications/<id>` with the
//   session cookie; the worker's request carries the site's Origin), and focuses a tab of the
//   site (navigated to the link when the link is on this site and the tab within the worker's
//   scope), or opens the link (or the site) in a new window.
// - message `{type: "herald:read", ids}` from a tab (herald.js sends it when its stream reports
//   them read, seen, archived, snoozed, deleted or replaced): closes those shown.
// - pushsubscriptionchange (the push service replaced the subscription): posts the new one to
//   Herald and deletes the old one.

const BASE = new URL("./", self.location.href); // `<base>/`

/**
 * Showing and listing notifications, one at a time: Chromium drops a notification it is still
 * showing from its records for good when `getNotifications()` crosses it.
 */
let queue = Promise.resolve();
const inTurn = (fn) => (queue = queue.then(fn, fn));

// A new version takes over at once (it keeps no state worth waiting for).
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let n = {};
  try {
    n = event.data?.json() ?? {};
  } catch {
    n = { body: event.data?.text() ?? "" };
  }
  const id = typeof n.id === "string" ? n.id : "";
  // `userVisibleOnly`: every push must show something, even a malformed one.
  event.waitUntil(inTurn(() => self.registration.showNotification(n.title || "New notification", {
    body: n.body ?? "",
    tag: id,
    data: { id: id || null, link: n.link ?? null },
    renotify: false,
  })));
});

/** `link` as a URL when it is http(s); null otherwise (nothing else is opened). */
function safeUrl(link) {
  if (!link) return null;
  try {
    const url = new URL(link, BASE);
    return url.protocol === "https:" || url.protocol === "http:" ? url : null;
  } catch {
    return null;
  }
}

/**
 * Focus a tab of this site: one at the link, or, without a link, any (an app's tab outside
 * Herald's prefix too). A link on this site moves a tab this worker controls there (one within
 * its scope: only those can be navigated); else the link, or the site, opens in a new window.
 * The click allows one window interaction, a focus or an open: the choice is made before it.
 */
async function show(link) {
  const url = safeUrl(link);
  const site = new URL("/", self.location.href);
  const windows = (options) => self.clients.matchAll({ type: "window", ...options });
  const tabs = url === null || url.origin === site.origin ? await windows({ includeUncontrolled: true }) : [];
  const at = url ? tabs.find((c) => c.url === url.href) : tabs.find((c) => c.focused) ?? tabs[0];
  if (at) return void (await at.focus());
  const controlled = tabs.length ? await windows({}) : [];
  const tab = controlled.find((c) => c.focused) ?? controlled[0];
  if (!tab) return void (await self.clients.openWindow((url ?? site).href));
  await tab.focus();
  await tab.navigate(url.href).catch(() => {}); // closed or navigated away meanwhile
}

/** A request to Herald as the signed-in user (the session cookie). */
function send(method, path, body) {
  return fetch(new URL(path, BASE), {
    method,
    credentials: "include",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

self.addEventListener("notificationclick", (event) => {
  const { id, link } = event.notification.data ?? {};
  event.notification.close();
  // Both at once: opening the window must start while the click still allows it, and reading
  // must happen even when the browser refuses the focus.
  const read = id ? send("PATCH", `notifications/${encodeURIComponent(id)}`, { read: true }) : null;
  event.waitUntil(Promise.allSettled([show(link), read]));
});

self.addEventListener("message", (event) => {
  const { type, ids } = event.data ?? {};
  if (type !== "herald:read" || !Array.isArray(ids)) return;
  const done = new Set(ids.map(String));
  event.waitUntil(inTurn(async () => {
    for (const n of await self.registration.getNotifications()) if (done.has(n.tag)) n.close();
  }));
});

self.addEventListener("pushsubscriptionchange", (event) => {
  const old = event.oldSubscription;
  event.waitUntil((async () => {
    const fresh = event.newSubscription ?? (old ? await self.registration.pushManager.subscribe(old.options) : null);
    if (fresh) await send("POST", "push/subscriptions", fresh.toJSON());
    if (old && old.endpoint !== fresh?.endpoint) await send("DELETE", "push/subscriptions", { endpoint: old.endpoint });
  })());
});
