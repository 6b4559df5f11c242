// Web Push in the browser, in real headless Chromium against Herald with Web Push on: the
// service worker /herald-sw.js shows a pushed notification, a click marks it read, closes it
// and focuses (or navigates, or opens) a window, a notification read elsewhere closes, and a
// subscription the push service replaced reaches the server; `h.push` and the demo's "Notify
// me on this device" toggle.
//
// No push service is reachable here: pushes are delivered to the registered worker through the
// DevTools protocol (`ServiceWorker.deliverPushMessage`). A real click needs the browser's
// notification UI, which headless Chromium has not: the worker's own `notificationclick`
// handler runs on a constructed event (its `waitUntil` collected by the test), with
// `focus`/`openWindow` recorded instead of performed (they need a user's click). Headless
// Chromium's `pushManager.subscribe` never answers (no push service): `enable()` is tested
// against that (it gives up with a clear error), and against a stand-in `PushManager` for the
// rest (the subscription posted, deleted, refused).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createECDH, randomBytes } from "node:crypto";
import http from "node:http";
import { startHerald, token, publish, publishNotification, until, vapid, launchBrowser } from "./harness.mjs";

let herald;
let keys;
before(async () => {
  keys = vapid();
  herald = await startHerald(["--dev", ...keys.args]);
});
after(() => herald?.stop());

async function browser({ grant = true, init, origin = herald.base } = {}) {
  const launched = await launchBrowser();
  const { context } = launched;
  if (grant) await context.grantPermissions(["notifications"], { origin });
  if (init) await context.addInitScript(init.fn, init.arg);
  return launched;
}

async function signIn(page, user, base = herald.base) {
  await page.goto(`${base}/`);
  await page.fill("#login-user", user);
  await page.click("#login-submit");
  await page.waitForFunction(() => window.heraldDemo?.ready === true, null, { timeout: 15_000 });
}

/** A user's request with a Bearer token (another device): the parsed body (null for 204). */
async function asUser(user, method, path, body) {
  const r = await fetch(`${herald.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token("--sub", user)}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(r.ok, `${method} ${path}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}

const readAt = async (user, id) => (await asUser(user, "GET", "/notifications")).notifications.find((n) => n.id === id)?.read_at;

/**
 * Register /herald-sw.js from the page (as `h.push.enable()` does) and find it for DevTools:
 * `{ worker, push(payload) }`; `push` delivers a Web Push message to it and resolves once its
 * notification is shown. Shown means the worker's `showNotification` finished, as recorded
 * by a wrapper: asking `getNotifications()` meanwhile is no way to wait, since Chromium drops a
 * notification it is still showing from that list for good when the two cross.
 */
async function registerWorker(context, page, base = herald.base) {
  const cdp = await context.newCDPSession(page);
  const registrations = new Map();
  cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => {
    for (const r of e.registrations) registrations.set(r.scopeURL, r);
  });
  await cdp.send("ServiceWorker.enable");
  const [worker] = await Promise.all([
    context.serviceWorkers()[0] ?? context.waitForEvent("serviceworker"),
    page.evaluate(async (prefix) => {
      await navigator.serviceWorker.register(`${prefix}/herald-sw.js`, { scope: `${prefix}/` });
      await navigator.serviceWorker.ready;
    }, new URL(base).pathname.replace(/\/$/, "")),
  ]);
  assert.equal(worker.url(), `${base}/herald-sw.js`);
  await worker.evaluate(() => {
    self.shownTags = [];
    const show = ServiceWorkerRegistration.prototype.showNotification;
    ServiceWorkerRegistration.prototype.showNotification = async function (title, options) {
      await show.call(this, title, options);
      self.shownTags.push(options?.tag);
    };
  });
  const scope = `${base}/`;
  await until(() => registrations.get(scope)?.isDeleted === false, "the registration to show in DevTools");
  const push = async (payload) => {
    const shows = () => worker.evaluate((tag) => self.shownTags.filter((t) => t === tag).length, payload.id);
    const before = await shows();
    await cdp.send("ServiceWorker.deliverPushMessage", {
      origin: new URL(base).origin,
      registrationId: registrations.get(scope).registrationId,
      data: JSON.stringify(payload),
    });
    await until(async () => (await shows()) > before, `notification ${payload.id} to show`);
  };
  return { worker, push };
}

/** The notifications the worker shows, as the page's `getNotifications()` reports them. */
const shown = (page) => page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications())
  .map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })));

/**
 * Click the shown notification `tag`: the worker's own `notificationclick` handler, on a
 * constructed event. Resolves to what it did to windows: `["focus", url]`, `["open", url]`.
 */
function click(worker, tag) {
  return worker.evaluate(async (tag) => {
    const [notification] = await self.registration.getNotifications({ tag });
    if (!notification) throw new Error(`no notification ${tag} shown`);
    const done = [];
    const { focus } = WindowClient.prototype;
    const { openWindow } = Clients.prototype;
    WindowClient.prototype.focus = function () {
      done.push(["focus", this.url]);
      return Promise.resolve(this);
    };
    Clients.prototype.openWindow = (url) => {
      done.push(["open", url]);
      return Promise.resolve(null);
    };
    try {
      const event = new NotificationEvent("notificationclick", { notification });
      const waits = [];
      Object.defineProperty(event, "waitUntil", { value: (p) => waits.push(p) });
      self.dispatchEvent(event);
      const settled = (await Promise.all(waits)).flat();
      const failed = settled.filter((s) => s?.status === "rejected").map((s) => String(s.reason));
      if (failed.length) throw new Error(failed.join("; "));
    } finally {
      WindowClient.prototype.focus = focus;
      Clients.prototype.openWindow = openWindow;
    }
    return done;
  }, tag);
}

test("a pushed notification is shown; a click marks it read, closes it and focuses the open tab", async () => {
  const user = "sw-click";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    const { worker, push } = await registerWorker(context, page);
    const id = (await publishNotification(herald.base, user, { title: "Build failed", body: "main is red", category: "builds" })).ids[user];
    await push({ id, title: "Build failed", body: "main is red", link: null, category: "builds", unread_count: 1 });
    assert.deepEqual(await shown(page), [{ title: "Build failed", body: "main is red", tag: id, data: { id, link: null } }]);
    // the same push again replaces it (tag = id) rather than stacking
    await push({ id, title: "Build failed", body: "main is red", link: null, category: "builds", unread_count: 1 });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await shown(page)).length, 1);

    assert.deepEqual(await click(worker, id), [["focus", `${herald.base}/`]]);
    assert.deepEqual(await shown(page), [], "closed");
    assert.ok(await readAt(user, id), "marked read on the server with the session cookie");
    // and the tab's stream tells the tray
    await page.waitForSelector(`#tray [data-id="${id}"]:not(.unread)`, { state: "attached", timeout: 10_000 });
  } finally {
    await close();
  }
});

test("a click navigates the tab to a link on this site, opens a link elsewhere, and opens the site when no tab is open", async () => {
  const user = "sw-links";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    const { worker, push } = await registerWorker(context, page);
    const here = `${herald.base}/healthz`;
    const away = "https://ci.example.com/builds/1287";
    const [a, b, c] = [await publish(herald.base, user, "a"), await publish(herald.base, user, "b"), await publish(herald.base, user, "c")];
    await push({ id: a, title: "a", body: "", link: away, category: null, unread_count: 3 });
    await push({ id: b, title: "b", body: "", link: here, category: null, unread_count: 3 });
    assert.equal((await shown(page)).length, 2);

    assert.deepEqual(await click(worker, a), [["open", away]], "a link elsewhere opens in a new window; the app's tab stays");
    assert.deepEqual(await click(worker, b), [["focus", `${herald.base}/`]]);
    await page.waitForURL(here, { timeout: 10_000 });

    // No tab of the site open: the site opens.
    await page.goto("about:blank");
    await push({ id: c, title: "c", body: "", link: null, category: null, unread_count: 1 });
    assert.deepEqual(await click(worker, c), [["open", `${herald.base}/`]]);
    for (const id of [a, b, c]) assert.ok(await readAt(user, id), `${id} read`);
  } finally {
    await close();
  }
});

test("a shown notification closes when the tab's stream reports it read or archived elsewhere", async () => {
  const user = "sw-elsewhere";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    const { push } = await registerWorker(context, page);
    const [a, b, c] = [await publish(herald.base, user, "a"), await publish(herald.base, user, "b"), await publish(herald.base, user, "c")];
    for (const id of [a, b, c]) await push({ id, title: id, body: "", link: null, category: null, unread_count: 3 });
    assert.equal((await shown(page)).length, 3);
    const tags = async () => (await shown(page)).map((n) => n.tag).sort();

    await asUser(user, "PATCH", `/notifications/${a}`, { read: true }); // on another device
    await until(async () => (await tags()).join() === [b, c].sort().join(), "a to close");
    await asUser(user, "PATCH", "/notifications", { ids: [b], archived: true });
    await until(async () => (await tags()).join() === c, "b to close");
    assert.equal((await readAt(user, c)) ?? null, null, "c stays shown and unread");
  } finally {
    await close();
  }
});

test("a subscription the push service replaced is posted to Herald by the worker, and the old one deleted", async () => {
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, "sw-change");
    const { worker } = await registerWorker(context, page);
    const sent = await worker.evaluate(async (keys) => {
      const sent = [];
      const native = self.fetch;
      self.fetch = async (url, init) => {
        const r = await native(url, init);
        sent.push([init.method, new URL(url).pathname, r.status]);
        return r;
      };
      try {
        const subscription = (endpoint) => ({ endpoint, options: {}, toJSON: () => ({ endpoint, keys }) });
        const event = new ExtendableEvent("pushsubscriptionchange");
        const waits = [];
        Object.defineProperties(event, {
          oldSubscription: { value: subscription("https://fcm.googleapis.com/fcm/send/old") },
          newSubscription: { value: subscription("https://fcm.googleapis.com/fcm/send/new") },
          waitUntil: { value: (p) => waits.push(p) },
        });
        self.dispatchEvent(event);
        await Promise.all(waits);
      } finally {
        self.fetch = native;
      }
      return sent;
    }, subscriptionKeys());
    // with the session cookie, and the site's Origin that the server's rule for cookie writes wants
    assert.deepEqual(sent, [["POST", "/push/subscriptions", 201], ["DELETE", "/push/subscriptions", 204]]);
  } finally {
    await close();
  }
});

/** A stand-in PushManager (none reachable here): subscriptions with an endpoint the test sets. */
function fakePushManager(keys) {
  let current = null;
  window.pushCalls = [];
  PushManager.prototype.getSubscription = async () => current;
  PushManager.prototype.subscribe = async (options) => {
    window.pushCalls.push(["subscribe", options.userVisibleOnly, Array.from(new Uint8Array(options.applicationServerKey))]);
    const endpoint = window.pushEndpoint ?? "https://fcm.googleapis.com/fcm/send/herald-test";
    current = {
      endpoint,
      options: { userVisibleOnly: true, applicationServerKey: options.applicationServerKey },
      toJSON: () => ({ endpoint, expirationTime: null, keys }),
      unsubscribe: async () => {
        window.pushCalls.push(["unsubscribe", endpoint]);
        current = null;
        return true;
      },
    };
    return current;
  };
}

const base64url = (b) => Buffer.from(b).toString("base64url");
/** The `keys` of a browser's subscription: a P-256 point and an auth secret. */
const subscriptionKeys = () => ({ p256dh: base64url(createECDH("prime256v1").generateKeys()), auth: base64url(randomBytes(16)) });

test("the toggle turns Web Push on and off: the subscription is posted and deleted; a refused one stays off", async () => {
  const { context, close } = await browser({ init: { fn: fakePushManager, arg: subscriptionKeys() } });
  try {
    const page = await context.newPage();
    const calls = [];
    page.on("response", (r) => r.url().endsWith("/push/subscriptions") && calls.push([r.request().method(), r.status()]));
    await signIn(page, "toggle-user");
    await page.waitForSelector("#push:not([hidden])", { timeout: 10_000 });
    assert.equal(await page.isChecked("#push-toggle"), false);
    assert.match(await page.textContent("#push-state"), /^Off/);

    // An endpoint outside the server's allow-list: 400, said in words, and the browser's
    // subscription is dropped so nothing is half on.
    await page.evaluate(() => (window.pushEndpoint = "https://push.internal.example/x"));
    await page.click("#push-toggle");
    await page.waitForSelector("#push-error:not([hidden])", { timeout: 10_000 });
    assert.equal(await page.textContent("#push-error"), "This site doesn't accept notifications through this browser's push service.");
    await page.waitForFunction(() => !document.querySelector("#push-toggle").disabled);
    assert.equal(await page.isChecked("#push-toggle"), false);
    assert.deepEqual(calls, [["POST", 400]]);
    assert.deepEqual((await page.evaluate(() => window.pushCalls)).map((c) => c[0]), ["subscribe", "unsubscribe"]);

    await page.evaluate(() => delete window.pushEndpoint);
    await page.click("#push-toggle");
    await page.waitForFunction(() => !document.querySelector("#push-toggle").disabled && document.querySelector("#push-toggle").checked, null, { timeout: 10_000 });
    assert.ok(await page.isHidden("#push-error"), "the old error is gone");
    assert.match(await page.textContent("#push-state"), /^On/);
    assert.deepEqual(calls.at(-1), ["POST", 201]);
    const [, visibleOnly, serverKey] = (await page.evaluate(() => window.pushCalls)).at(-1);
    assert.equal(visibleOnly, true);
    assert.deepEqual(serverKey, [...Buffer.from(keys.publicKey, "base64url")], "subscribed with the server's key");
    const registration = await page.evaluate(async () => {
      const r = await navigator.serviceWorker.getRegistration("/");
      return { scope: r.scope, script: r.active.scriptURL };
    });
    assert.deepEqual(registration, { scope: `${herald.base}/`, script: `${herald.base}/herald-sw.js` });
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.enabled()), true);
    // enable() again posts the same subscription again (the server replaces it), no new one
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.enable()), true);
    assert.deepEqual(calls.at(-1), ["POST", 201]);
    assert.equal((await page.evaluate(() => window.pushCalls)).filter((c) => c[0] === "subscribe").length, 2);

    await page.click("#push-toggle");
    await page.waitForFunction(() => !document.querySelector("#push-toggle").disabled && !document.querySelector("#push-toggle").checked, null, { timeout: 10_000 });
    assert.deepEqual(calls.at(-1), ["DELETE", 204]);
    assert.deepEqual((await page.evaluate(() => window.pushCalls)).at(-1), ["unsubscribe", "https://fcm.googleapis.com/fcm/send/herald-test"]);
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.enabled()), false);
    assert.match(await page.textContent("#push-state"), /^Off/);
    const left = await page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).map((r) => r.scope));
    assert.deepEqual(left, [], "disable() unregisters herald-sw.js");
  } finally {
    await close();
  }
});

/** `h.push.enable()` in the page: `{ ok }` or the error's `{ name, code, message }`. */
const enable = (page, timeout) => page.evaluate(async (timeout) => {
  const { push } = window.heraldDemo.herald;
  if (timeout) push.subscribeTimeout = timeout;
  try {
    return { ok: await push.enable() };
  } catch (e) {
    return { name: e.name, code: e.code, message: e.message };
  }
}, timeout);

test("enable() says why it can't: permission denied, no push service in this browser", async () => {
  const { context, close } = await browser({ grant: false }); // headless Chromium denies the prompt
  try {
    const page = await context.newPage();
    await signIn(page, "denied-user");
    await page.waitForSelector("#push:not([hidden])", { timeout: 10_000 });
    await page.click("#push-toggle");
    await page.waitForSelector("#push-error:not([hidden])", { timeout: 10_000 });
    assert.match(await page.textContent("#push-error"), /blocked for this site/);
    await page.waitForFunction(() => !document.querySelector("#push-toggle").disabled);
    assert.equal(await page.isChecked("#push-toggle"), false);
    assert.deepEqual(await enable(page), { name: "HeraldError", code: "permission_denied", message: await page.textContent("#push-error") });

    // Allowed, but this browser has no push service: it gives up after subscribeTimeout.
    await context.grantPermissions(["notifications"], { origin: herald.base });
    const started = Date.now();
    const failed = await enable(page, 1_500);
    assert.equal(failed.code, "push_failed", JSON.stringify(failed));
    assert.match(failed.message, /couldn't set up notifications/);
    assert.ok(Date.now() - started < 10_000);
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.enabled()), false);
  } finally {
    await close();
  }
});

test("without Web Push on the server or in the browser the toggle is hidden and enable() says why", async () => {
  const off = await startHerald(["--dev"]);
  try {
    const { context, close } = await browser();
    try {
      const page = await context.newPage();
      await signIn(page, "no-push-user", off.base);
      assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.supported), true);
      assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.available()), false);
      assert.ok(await page.isHidden("#push"));
      const refused = await enable(page);
      assert.equal(refused.code, "push_off");
      assert.match(refused.message, /aren't available on this site/);
    } finally {
      await close();
    }
  } finally {
    off.stop();
  }
  const strip = { fn: () => Object.defineProperty(window, "PushManager", { value: undefined, configurable: true }) };
  const { context, close } = await browser({ init: strip });
  try {
    const page = await context.newPage();
    await signIn(page, "old-browser-user");
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.supported), false);
    assert.ok(await page.isHidden("#push"));
    assert.deepEqual(await enable(page), { name: "HeraldError", code: "unsupported", message: "This browser can't show notifications from this site." });
  } finally {
    await close();
  }
});

/** A proxy that serves Herald under `prefix` (stripped on the way in), as a site would; the
 * site's own pages (any other path) are a one-line page. */
function prefixProxy(target, prefix) {
  const server = http.createServer((req, res) => {
    if (!req.url.startsWith(`${prefix}/`)) return res.writeHead(200, { "content-type": "text/html" }).end("<title>app</title>");
    const upstream = http.request(new URL(req.url.slice(prefix.length), target), { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    res.on("close", () => upstream.destroy()); // streams end with the browser's side
    req.pipe(upstream);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    resolve({ origin, base: `${origin}${prefix}`, close: () => (server.closeAllConnections(), server.close()) });
  }));
}

test("under a path prefix the worker, its requests and h.push stay within the prefix", async () => {
  const user = "prefixed-user";
  const site = await prefixProxy(herald.base, "/herald");
  const { context, close } = await browser({ origin: site.origin, init: { fn: fakePushManager, arg: subscriptionKeys() } });
  try {
    const page = await context.newPage();
    const calls = [];
    page.on("response", (r) => r.url().includes("/push/") && calls.push([r.request().method(), new URL(r.url()).pathname, r.status()]));
    await signIn(page, user, site.base);
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.enable()), true);
    const registration = await page.evaluate(async () => {
      const r = await navigator.serviceWorker.getRegistration("/herald/");
      return { scope: r.scope, script: r.active.scriptURL };
    });
    assert.deepEqual(registration, { scope: `${site.base}/`, script: `${site.base}/herald-sw.js` });
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.push.disable()), true);
    assert.deepEqual(calls, [["GET", "/herald/push/key", 200], ["POST", "/herald/push/subscriptions", 201], ["DELETE", "/herald/push/subscriptions", 204]]);

    const { worker, push } = await registerWorker(context, page, site.base);
    const [a, b] = [await publish(herald.base, user, "a"), await publish(herald.base, user, "b")];
    await push({ id: a, title: "a", body: "", link: null, category: null, unread_count: 2 });
    await push({ id: b, title: "b", body: "", link: null, category: null, unread_count: 2 });
    assert.deepEqual(await click(worker, a), [["focus", `${site.base}/`]]);
    assert.ok(await readAt(user, a), "read through the prefix");
    await asUser(user, "PATCH", `/notifications/${b}`, { read: true });
    await until(async () => (await shown(page)).length === 0, "b to close");

    // The app's own tab, outside the prefix (the worker's scope), is the open tab a click
    // focuses; a link on the site that no tab shows opens (that tab can't be navigated).
    const c = await publish(herald.base, user, "c");
    await push({ id: c, title: "c", body: "", link: null, category: null, unread_count: 1 });
    const d = await publish(herald.base, user, "d");
    await push({ id: d, title: "d", body: "", link: "/builds/7", category: null, unread_count: 2 });
    const app = await context.newPage();
    await app.goto(`${site.origin}/app`);
    await page.close();
    assert.deepEqual(await click(worker, c), [["focus", `${site.origin}/app`]]);
    assert.deepEqual(await click(worker, d), [["open", `${site.origin}/builds/7`]]);
  } finally {
    await close();
    site.close();
  }
});
