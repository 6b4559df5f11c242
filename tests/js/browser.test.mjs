// The browser client in real headless Chromium against a running Herald (--dev demo page): tab
// sharing through SharedWorker, leader election without it (also a tab whose hello fell between
// two leaders, a shared stream that was replaced, a SharedWorker script that does not load), per-tab fallback (where a duplicated tab gets its own stream), reload without
// loss (also while another tab keeps the stream, and a page the back button restores), the tray of a user who was offline, sign-out
// reaching every tab (also as a reconnect refused with 401 after a restart lost the session),
// and a second user on the same browser who must not resume from the first one's position (nor,
// signed in in another tab, go unannounced), a tab back with a position the server no longer
// has (reset alone), a stream refused with 429 (connect rejects); the
// client's own API (markRead, markUnread, markSeen, archive, delete, markAllRead, list, reset,
// revoked, forgetPosition); and the demo of the tray beyond read/unread (an unseen badge that
// clears in every tab when the tray opens, action buttons, snooze, a quiet first load).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, token, publish, publishNotification, until, vapid, launchBrowser } from "./harness.mjs";

let herald;
// Web Push on, as a deployment would have it (the demo asks for the key: no 404 at load).
before(async () => { herald = await startHerald(["--dev", ...vapid().args]); });
after(() => herald?.stop());

/** A fresh browser profile; `strip` removes APIs before any page script runs. */
const browser = (strip = []) => launchBrowser({ strip });

async function waitReady(page, timeout = 15_000) {
  await page.waitForFunction(() => window.heraldDemo?.ready === true, null, { timeout });
}

async function signIn(page, user, timeout) {
  await page.goto(`${herald.base}/`);
  await page.fill("#login-user", user);
  await page.click("#login-submit");
  await waitReady(page, timeout);
}

/** Make the SharedWorker's script a 404, as a proxy that does not pass it would: in every page,
 * or only in pages whose URL has `marker`. */
const failWorker = (context, marker = "") => context.addInitScript((marker) => {
  if (marker && !location.search.includes(marker)) return;
  const Real = SharedWorker;
  window.SharedWorker = function (url, options) {
    return new Real(String(url).replace("herald-worker.js", "no-such-worker.js"), options);
  };
}, marker);

async function openTab(context) {
  const page = await context.newPage();
  await page.goto(`${herald.base}/`);
  await waitReady(page);
  return page;
}

async function streams(user) {
  const r = await fetch(`${herald.base}/presence/${user}`, { headers: { authorization: `Bearer ${token("--scope", "publish")}` } });
  return (await r.json()).sessions;
}

/** The notification is in the tray (the tray is a panel that may be closed, hence "attached"). */
const shows = (page, id) => page.waitForSelector(`#tray [data-id="${id}"]`, { state: "attached", timeout: 10_000 });
/** Open the tray panel with the bell (which marks everything seen). */
async function openTray(page) {
  if (await page.isHidden("#tray-panel")) await page.click("#bell");
  await page.waitForSelector("#tray-panel", { state: "visible" });
}
const badge = (page) => page.textContent("#badge");
const transport = (page) => page.evaluate(() => window.heraldDemo.herald.transport);

/** The three transports and the APIs to remove from the page to get each. */
const TRANSPORTS = [
  ["shared-worker", []],
  ["leader", ["SharedWorker"]],
  ["tab", ["SharedWorker", "locks"]],
];

/** The position this browser keeps for the next stream: `{ id, unread }` or null. */
const storedPosition = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("herald:position:/") ?? "null"));
const tagOf = (id) => id.slice(0, id.lastIndexOf("."));

/** End the browser's session the way any app would (not the demo's button, which also reloads). */
async function signOutWithoutForgetting(page) {
  const status = await page.evaluate(async () => (await fetch("/session", { method: "DELETE", credentials: "include" })).status);
  assert.equal(status, 204);
}

/** Two tabs hold one stream; events reach both; a read in one shows in the other. */
async function twoTabsShareOneStream(strip, expectedTransport, user) {
  const { context, close } = await browser(strip);
  try {
    const first = await context.newPage();
    await signIn(first, user);
    const second = await openTab(context);
    assert.equal(await transport(first), expectedTransport);
    assert.equal(await transport(second), expectedTransport);
    const live = await streams(user);
    assert.equal(live.length, 1, `one stream for two tabs: ${JSON.stringify(live)}`);

    const id = await publish(herald.base, user, "to both tabs");
    await shows(first, id);
    await shows(second, id);
    assert.equal(await badge(first), "1");
    assert.equal(await badge(second), "1");

    await openTray(second);
    await second.click(`[data-id="${id}"] .toggle`);
    await first.waitForSelector(`#tray [data-id="${id}"]:not(.unread)`, { state: "attached", timeout: 10_000 });
    await first.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");

    // Closing the tab that started the stream keeps the other one receiving.
    await first.close({ runBeforeUnload: true });
    const started = Date.now();
    const after = await publish(herald.base, user, "after the first tab closed");
    await shows(second, after);
    const handover = Date.now() - started;
    assert.equal((await streams(user)).length, 1);
    return handover;
  } finally {
    await close();
  }
}

test("two tabs share one stream through a SharedWorker", async () => {
  await twoTabsShareOneStream([], "shared-worker", "alice");
});

test("a tab that crashes with the SharedWorker in its process: the other tabs start a new one and miss nothing", async () => {
  const { context, close } = await browser();
  try {
    const first = await context.newPage();
    await signIn(first, "crash");
    const second = await openTab(context);
    assert.equal(await transport(second), "shared-worker");
    const before = await publish(herald.base, "crash", "before the crash");
    await shows(second, before);
    // Headless Chromium runs the worker in the process of the tab that started it.
    const cdp = await context.newCDPSession(first);
    cdp.send("Page.crash").catch(() => {});
    await until(async () => (await streams("crash")).length === 0, "the crashed worker's stream to end");
    const during = await publish(herald.base, "crash", "while no worker lives");
    // The second tab hears nothing from the worker, connects again, and the new worker
    // resumes from the tab's position: what was published meanwhile arrives, once.
    await second.waitForSelector(`#tray [data-id="${during}"]`, { state: "attached", timeout: 20_000 });
    const after = await publish(herald.base, "crash", "to the new worker");
    await shows(second, after);
    assert.equal((await streams("crash")).length, 1);
    const ids = await second.evaluate(() => [...document.querySelectorAll("#tray [data-id]")].map((e) => e.dataset.id));
    assert.deepEqual(ids.filter((id) => [before, during, after].includes(id)).sort(), [before, during, after].sort());
  } finally {
    await close();
  }
});

test("without SharedWorker a leader tab holds the stream and hands over", async () => {
  const handover = await twoTabsShareOneStream(["SharedWorker"], "leader", "bob");
  console.log(`leader hand-over delivered the next notification after ${handover} ms`);
});

test("without SharedWorker and Web Locks each tab holds its own stream", async () => {
  const { context, close } = await browser(["SharedWorker", "locks"]);
  try {
    const first = await context.newPage();
    await signIn(first, "carol");
    const second = await openTab(context);
    assert.equal(await transport(second), "tab");
    assert.equal((await streams("carol")).length, 2);
    const id = await publish(herald.base, "carol", "per tab");
    await shows(first, id);
    await shows(second, id);
  } finally {
    await close();
  }
});

test("a tab duplicated from another holds a stream of its own; the original keeps its stream, a reload keeps its id (tab)", async () => {
  const user = "duplicated";
  const { context, close } = await browser(["SharedWorker", "locks"]);
  try {
    const first = await context.newPage();
    const tabs = []; // the first page's `?tab=` ids, in order
    first.on("request", (r) => r.url().includes("/events?") && tabs.push(new URL(r.url()).searchParams.get("tab")));
    await signIn(first, user);
    // A copy of the page, as "Duplicate tab" makes it: the browser copies sessionStorage.
    const [copy] = await Promise.all([context.waitForEvent("page"), first.evaluate(() => window.open(location.href))]);
    await waitReady(copy);
    assert.equal(await transport(copy), "tab");
    await until(async () => (await streams(user)).length === 2, "a stream per tab");
    const id = await publish(herald.base, user, "to the original and its copy");
    await shows(first, id);
    await shows(copy, id);
    assert.equal(await first.evaluate(() => window.heraldDemo.herald.closed), false, "the original was not replaced");
    assert.equal((await streams(user)).length, 2);

    await first.reload();
    await waitReady(first);
    assert.equal(tabs.length, 2, `one stream before and one after the reload: ${tabs}`);
    assert.equal(tabs[1], tabs[0], "the reload keeps the tab's id");
    await until(async () => (await streams(user)).length === 2, "still a stream per tab");
    const next = await publish(herald.base, user, "after the reload");
    await shows(first, next);
    await shows(copy, next);
  } finally {
    await close();
  }
});

test("a reload resumes by last event id: each missed notification arrives once", async () => {
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, "dave");
    const before = await publish(herald.base, "dave", "before the reload");
    await shows(page, before);
    // Leave the page (its stream closes), publish while it is away, then come back.
    await page.goto("about:blank");
    await until(async () => (await streams("dave")).length === 0, "the stream to close");
    const during = [await publish(herald.base, "dave", "during 1"), await publish(herald.base, "dave", "during 2")];
    await page.goto(`${herald.base}/`);
    await waitReady(page);
    await page.waitForFunction((ids) => ids.every((id) => window.heraldEvents.includes(id)), during, { timeout: 10_000 });
    const events = await page.evaluate(() => window.heraldEvents);
    for (const id of during) assert.equal(events.filter((e) => e === id).length, 1, `${id} exactly once in ${events}`);
    assert.ok(!events.includes(before), "nothing from before the reload is replayed");
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.unreadCount), 3);
    assert.equal(await badge(page), "3");
  } finally {
    await close();
  }
});

test("a reloaded tab's unread count does not go back while it replays what it missed", async () => {
  const user = "recount";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    await bareClient(page);
    const before = [];
    for (let i = 0; i < 3; i++) before.push(await publish(herald.base, user, `before ${i}`));
    await page.waitForFunction((n) => window.h.unreadCount === n, before.length, { timeout: 10_000 });
    await page.goto("about:blank");
    await until(async () => (await streams(user)).length === 0, "the stream to close");
    const during = [];
    for (let i = 0; i < 4; i++) during.push(await publish(herald.base, user, `during ${i}`));
    await bareClient(page, { counts: true });
    await page.waitForFunction((ids) => ids.every((id) => JSON.parse(sessionStorage.getItem("events")).includes(id)), during, {
      timeout: 10_000,
    });
    const counts = await page.evaluate(() => window.counts);
    assert.deepEqual(counts, [7], `the count once connected, then on each event: ${counts}`);
  } finally {
    await close();
  }
});

/**
 * A bare page of the origin with only the client on it: `window.h`. The ids of its
 * `notification` events go to sessionStorage `events`, which outlives a reload of the tab;
 * with `counts`, `window.counts` is the unread count once connected, then at each change.
 */
async function bareClient(page, { counts = false } = {}) {
  if (!page.url().endsWith("/healthz")) await page.goto(`${herald.base}/healthz`);
  await page.evaluate(async (counts) => {
    const { default: Herald } = await import("/herald.js");
    window.h = await Herald.connect();
    window.h.on("notification", (n) => {
      sessionStorage.setItem("events", JSON.stringify([...JSON.parse(sessionStorage.getItem("events") ?? "[]"), n.id]));
    });
    if (counts) {
      // the unread count once connected, then at every change of it
      window.counts = [window.h.unreadCount];
      window.h.on("counts", (c) => window.counts.push(c.unread_count));
    }
  }, counts);
}
const received = (page) => page.evaluate(() => JSON.parse(sessionStorage.getItem("events") ?? "[]"));

for (const [name, strip] of TRANSPORTS) {
  test(`a tab that reloads while another stays gets what was published meanwhile, each once (${name})`, async () => {
    const user = `reloading-${name}`;
    const { context, close } = await browser(strip);
    try {
      const first = await context.newPage();
      await signIn(first, user);
      await bareClient(first);
      const second = await context.newPage();
      await bareClient(second);
      assert.equal(await second.evaluate(() => window.h.transport), name);
      // The other tab keeps the shared stream (and the stored position) moving during the reload.
      const ids = [];
      const publishing = (async () => {
        for (let i = 0; i < 30; i++) {
          ids.push(await publish(herald.base, user, `n${i}`));
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      await until(() => ids.length >= 8, "the first publishes");
      await first.reload();
      await bareClient(first);
      await publishing;
      for (const [tab, page] of [["reloaded", first], ["other", second]]) {
        await page.waitForFunction((n) => JSON.parse(sessionStorage.getItem("events") ?? "[]").length >= n, ids.length, { timeout: 10_000 })
          .catch(() => {});
        const got = await received(page);
        assert.deepEqual(ids.filter((id) => !got.includes(id)), [], `the ${tab} tab missed none`);
        assert.equal(got.length, ids.length, `the ${tab} tab got each once: ${got}`);
        await until(async () => (await page.evaluate(() => window.h.unreadCount)) === ids.length, `the ${tab} tab's unread count`);
      }
    } finally {
      await close();
    }
  });
}

for (const [name, strip] of TRANSPORTS) {
  test(`a tab restored by the back button gets what was published while it was away, each once, and goes on (${name})`, async () => {
    const user = `restored-${name}`;
    const { context, close } = await launchBrowser({ strip, bfcache: true });
    try {
      const first = await context.newPage();
      await signIn(first, user);
      await bareClient(first);
      await first.evaluate(() => addEventListener("pageshow", (e) => { window.restored = e.persisted; }));
      const second = await context.newPage();
      await bareClient(second);
      assert.equal(await first.evaluate(() => window.h.transport), name);
      const ids = [await publish(herald.base, user, "before")];
      await first.waitForFunction(() => JSON.parse(sessionStorage.getItem("events") ?? "[]").length >= 1);
      await first.goto(`${herald.base}/healthz?elsewhere`);
      ids.push(await publish(herald.base, user, "away 1"), await publish(herald.base, user, "away 2"));
      await first.goBack({ waitUntil: "commit" }); // a restored page fires no load
      await first.waitForFunction(() => window.restored !== undefined, null, { timeout: 10_000 });
      assert.equal(await first.evaluate(() => window.restored), true, "restored from the back/forward cache");
      ids.push(await publish(herald.base, user, "after 1"), await publish(herald.base, user, "after 2"));
      // At once: not after a watchdog's silence (the SharedWorker's is ~7 s).
      await first.waitForFunction((n) => JSON.parse(sessionStorage.getItem("events") ?? "[]").length >= n, ids.length, { timeout: 3_000 })
        .catch(() => {});
      const got = await received(first);
      assert.deepEqual(ids.filter((id) => !got.includes(id)), [], `the restored tab missed none: ${got}`);
      assert.equal(got.length, ids.length, `the restored tab got each once: ${got}`);
      await until(async () => (await first.evaluate(() => window.h.unreadCount)) === ids.length, "the restored tab's unread count");
    } finally {
      await close();
    }
  });
}

test("a page that goes into the back/forward cache before its SharedWorker answered holds one stream once restored", async () => {
  const user = "restored-early";
  const { context, close } = await launchBrowser({ bfcache: true });
  try {
    await context.addInitScript(() => {
      addEventListener("pageshow", (e) => { window.restored = e.persisted; });
      const Real = SharedWorker;
      window.SharedWorker = function (url, options) { window.workerMade = true; return new Real(url, options); };
    });
    // The worker's script comes late, as from a slow proxy: the page is gone before it answers.
    await context.route("**/herald-worker.js", async (route) => {
      await new Promise((r) => setTimeout(r, 2_500));
      await route.continue().catch(() => {});
    });
    const page = await context.newPage();
    await page.goto(`${herald.base}/healthz`);
    await page.evaluate(async (user) => {
      await fetch("/dev/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user }) });
      const { default: Herald } = await import("/herald.js");
      Herald.connect().then((h) => (window.h = h));
    }, user);
    await page.waitForFunction(() => window.workerMade === true, null, { timeout: 10_000 });
    await page.goto(`${herald.base}/healthz?elsewhere`);
    await page.goBack({ waitUntil: "commit" });
    await page.waitForFunction(() => window.restored !== undefined, null, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => window.restored), true, "restored from the back/forward cache");
    await until(async () => (await streams(user)).length === 1, "the restored page's stream", 15_000);
    // Past the first worker's start timer (10 s): it must not add a leader's stream.
    await new Promise((r) => setTimeout(r, 11_000));
    assert.equal((await streams(user)).length, 1, JSON.stringify(await streams(user)));
  } finally {
    await close();
  }
});

test("a reloaded follower takes only the leader's answer to its own hello, not another tab's ready (leader)", async () => {
  const user = "joining-together";
  const { context, close } = await browser(["SharedWorker"]);
  try {
    // A tab flagged slow says hello 1.5 s late, so that another tab joins meanwhile.
    await context.addInitScript(() => {
      const post = BroadcastChannel.prototype.postMessage;
      BroadcastChannel.prototype.postMessage = function (m) {
        if (m?.type === "hello" && sessionStorage.getItem("slowHello")) return void setTimeout(() => post.call(this, m), 1_500);
        return post.call(this, m);
      };
    });
    const leader = await context.newPage();
    await signIn(leader, user);
    await bareClient(leader);
    const follower = await context.newPage();
    await bareClient(follower);
    assert.equal(await follower.evaluate(() => window.h.transport), "leader");
    const before = await publish(herald.base, user, "before");
    await follower.waitForFunction((id) => JSON.parse(sessionStorage.getItem("events") ?? "[]").includes(id), before);
    await follower.evaluate(() => sessionStorage.setItem("slowHello", "1"));
    await follower.reload();
    const reconnected = bareClient(follower);
    // While its hello waits: two publishes the leader takes, and a third tab that joins (its
    // answer, a `ready` at the stream's position, goes to every tab).
    const ids = [await publish(herald.base, user, "during 1"), await publish(herald.base, user, "during 2")];
    await leader.waitForFunction((id) => JSON.parse(sessionStorage.getItem("events") ?? "[]").includes(id), ids[1]);
    await bareClient(await context.newPage());
    await reconnected;
    await follower.waitForFunction((n) => JSON.parse(sessionStorage.getItem("events") ?? "[]").length >= n, 3, { timeout: 10_000 })
      .catch(() => {});
    const got = await received(follower);
    assert.deepEqual(got, [before, ...ids], "the reloaded tab got what was published meanwhile, once");
  } finally {
    await close();
  }
});

test("a user who was offline finds the notification in the tray after signing in", async () => {
  const id = await publish(herald.base, "erin", "while you were away");
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, "erin");
    await shows(page, id);
    assert.equal(await badge(page), "1");
  } finally {
    await close();
  }
});

for (const [name, strip] of TRANSPORTS) {
  test(`signing out in one tab shows every tab signed out within 1 s (${name})`, async () => {
    const user = `leaving-${name}`;
    const { context, close } = await browser(strip);
    try {
      const first = await context.newPage();
      await signIn(first, user);
      const second = await openTab(context);
      assert.equal(await transport(second), name);
      // A change first: `revoked` then comes after an event id that EventSource repeats on it.
      const id = await publish(herald.base, user, "before signing out");
      await shows(first, id);
      await shows(second, id);
      for (const page of [first, second]) {
        await page.evaluate(() => window.heraldDemo.herald.on("revoked", () => (window.revokedAt = Date.now())));
      }
      const started = Date.now();
      await signOutWithoutForgetting(first);
      for (const [i, page] of [first, second].entries()) {
        await page.waitForSelector("#login-view:not([hidden])", { timeout: 5_000 });
        assert.ok(await page.isHidden("#app-view"), `tab ${i + 1} hides the tray`);
        const took = (await page.evaluate(() => window.revokedAt)) - started;
        console.log(`${name}: tab ${i + 1} signed out ${took} ms after DELETE /session`);
        assert.ok(took < 1_000, `tab ${i + 1} signed out after ${took} ms`);
      }
      // and nothing reconnects
      await until(async () => (await streams(user)).length === 0, "the streams to end");
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal((await streams(user)).length, 0, "no stream comes back after sign-out");
    } finally {
      await close();
    }
  });

  test(`the next user on the same browser resumes from nothing of the previous one's (${name})`, async () => {
    const [a, b] = [`first-${name}`, `next-${name}`];
    const { context, close } = await browser(strip);
    try {
      const page = await context.newPage();
      await signIn(page, a);
      assert.equal(await transport(page), name);
      for (const title of ["a1", "a2", "a3"]) await shows(page, await publish(herald.base, a, title));
      await openTray(page);
      await page.click("#mark-all");
      await page.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
      await until(async () => (await storedPosition(page))?.unread === 0, "a's position after the read");
      const left = await storedPosition(page);
      // b's log is longer than a's position: a seq-only resume would replay b's 5 and 6 only
      // and count a's unread 0 plus those 2.
      const earlier = [];
      for (let i = 1; i <= 6; i++) earlier.push(await publish(herald.base, b, `b${i}`));
      // signed out like the demo's button does it, except for `forgetPosition()`
      await signOutWithoutForgetting(page);
      await page.goto(`${herald.base}/`);
      await page.waitForSelector("#login-view:not([hidden])", { timeout: 5_000 });
      assert.deepEqual(await storedPosition(page), left, "the position was not forgotten");

      await signIn(page, b);
      assert.equal(await page.evaluate(() => window.heraldDemo.herald.user), b);
      for (const id of earlier) await shows(page, id);
      await until(async () => (await page.evaluate(() => window.heraldDemo.herald.unreadCount)) === 6, "b's unread count");
      const now = await storedPosition(page);
      assert.notEqual(tagOf(now.id), tagOf(left.id), `b's position is in b's log: ${now.id} after ${left.id}`);
      const live = [await publish(herald.base, b, "b7"), await publish(herald.base, b, "b8")];
      for (const id of live) await shows(page, id);
      const events = await page.evaluate(() => window.heraldEvents);
      for (const id of live) assert.equal(events.filter((e) => e === id).length, 1, `${id} once in ${events}`);
      assert.equal(await page.evaluate(() => window.heraldDemo.herald.unreadCount), 8);
      await page.waitForFunction(() => document.querySelector("#badge").dataset.count === "8");
    } finally {
      await close();
    }
  });
}

for (const [name, strip] of TRANSPORTS.filter(([name]) => name !== "tab")) {
  test(`a tab that joins with a position of another log starts from its page and leaves the others alone (${name})`, async () => {
    const user = `joining-${name}`;
    const { context, close } = await browser(strip);
    try {
      const first = await context.newPage();
      await signIn(first, user);
      const id = await publish(herald.base, user, "one");
      await shows(first, id);
      await first.evaluate(() => {
        window.resets = 0;
        window.heraldDemo.herald.on("reset", () => (window.resets += 1));
        // what another user, or a log that was lost, would have left behind
        localStorage.setItem("herald:position:/", JSON.stringify({ id: "0123456789ab.1", unread: 5, at: Date.now() }));
      });
      const second = await openTab(context);
      await shows(second, id);
      assert.equal(await second.evaluate(() => window.heraldDemo.herald.unreadCount), 1);
      const mine = await first.evaluate(() => window.heraldDemo.herald.lastId);
      assert.equal(await second.evaluate(() => window.heraldDemo.herald.lastId), mine);
      await until(async () => (await storedPosition(second))?.id === mine, "the joining tab to store the stream's position");
      assert.equal((await streams(user)).length, 1, "still one stream");
      const next = await publish(herald.base, user, "two");
      await shows(first, next);
      await shows(second, next);
      assert.equal(await first.evaluate(() => window.resets), 0, "the stream was not restarted for the other tabs");
      for (const page of [first, second]) {
        assert.equal((await page.evaluate(() => window.heraldEvents)).filter((e) => e === next).length, 1);
        assert.equal(await page.evaluate(() => window.heraldDemo.herald.unreadCount), 2);
      }
    } finally {
      await close();
    }
  });
}

/** `/events` requests the server answered with `status`, from its metrics. */
async function eventsAnswered(base, status) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("herald_http_requests_total") && l.includes('route="/events"') && l.includes(`status="${status}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

for (const [name, strip] of TRANSPORTS) {
  test(`a reconnect refused with 401 (a restart lost the session) is revoked in every tab, and nothing retries (${name})`, async () => {
    // A server of its own: it restarts, and an embedded one forgets its sessions when it does.
    let own = await startHerald(["--dev"]);
    const { context, close } = await browser(strip);
    try {
      const pages = [await context.newPage(), await context.newPage()];
      await pages[0].goto(`${own.base}/healthz`);
      const signedIn = await pages[0].evaluate(async (t) => (await fetch("/session", { method: "POST", headers: { authorization: `Bearer ${t}` } })).status, token("--sub", `lost-${name}`));
      assert.equal(signedIn, 204);
      for (const page of pages) {
        if (page !== pages[0]) await page.goto(`${own.base}/healthz`);
        await page.evaluate(async () => {
          const { default: Herald } = await import("/herald.js");
          window.h = await Herald.connect();
          window.revoked = [];
          window.h.on("revoked", (d) => window.revoked.push(d));
        });
      }
      assert.equal(await pages[1].evaluate(() => window.h.transport), name);
      await own.stop();
      own = await startHerald(["--dev"], { listen: new URL(own.base).host });
      for (const [i, page] of pages.entries()) {
        await page.waitForFunction(() => window.revoked.length > 0, null, { timeout: 15_000 })
          .catch(() => assert.fail(`tab ${i + 1} was not told`));
        assert.deepEqual(await page.evaluate(() => window.revoked), [{ reason: "unauthorized" }], `tab ${i + 1}`);
        assert.equal(await page.evaluate(() => window.h.closed), true, `tab ${i + 1} closed`);
      }
      const refused = await eventsAnswered(own.base, 401);
      assert.ok(refused >= 1, "the server refused the reconnect");
      await new Promise((r) => setTimeout(r, 2_500)); // longer than the first backoff (1 s) and the next (2 s)
      assert.equal(await eventsAnswered(own.base, 401), refused, "no retry after the 401");
    } finally {
      await close();
      await own.stop();
    }
  });
}

for (const [name, strip] of TRANSPORTS.filter(([name]) => name !== "tab")) {
  test(`a tab that signs in again moves the shared stream to its new session: signing out reaches every tab (${name})`, async () => {
    const user = `again-${name}`;
    const { context, close } = await browser(strip);
    try {
      const pages = [await context.newPage(), await context.newPage()];
      const sessions = [];
      for (const page of pages) {
        await page.goto(`${herald.base}/healthz`);
        // each tab signs in (a new session, the cookie replaced), then connects
        const signedIn = await page.evaluate(async (t) => (await fetch("/session", { method: "POST", headers: { authorization: `Bearer ${t}` } })).status, token("--sub", user));
        assert.equal(signedIn, 204);
        sessions.push(await page.evaluate(async () => {
          const { default: Herald } = await import("/herald.js");
          window.h = await Herald.connect();
          window.revoked = [];
          window.h.on("revoked", (d) => window.revoked.push(d));
          return window.h.session;
        }));
      }
      assert.equal(await pages[1].evaluate(() => window.h.transport), name);
      // the stream now runs on the second session, which both tabs share
      await pages[0].waitForFunction((s) => window.h.session === s, sessions[1], { timeout: 5_000 })
        .catch(() => assert.fail("the first tab's stream did not move to the new session"));
      await until(async () => (await streams(user)).length === 1, "one stream, on the new session");
      await signOutWithoutForgetting(pages[1]);
      for (const [i, page] of pages.entries()) {
        await page.waitForFunction(() => window.revoked.length > 0, null, { timeout: 5_000 })
          .catch(() => assert.fail(`tab ${i + 1} was not told`));
      }
      await until(async () => (await streams(user)).length === 0, "the streams to end");
    } finally {
      await close();
    }
  });
}

/** In `page` (on `base`): sign in as `user` (a new session, the cookie replaced). */
async function signInAs(page, base, user) {
  await page.goto(`${base}/healthz`);
  const status = await page.evaluate(async (t) => (await fetch("/session", { method: "POST", headers: { authorization: `Bearer ${t}` } })).status, token("--sub", user));
  assert.equal(status, 204);
}

for (const [name, strip] of TRANSPORTS) {
  test(`connect rejects with the stream's refusal (429 too_many_streams) and the refused client stops (${name})`, async () => {
    // One stream per user: a second browser of the same user is refused.
    const own = await startHerald(["--dev", "--max-streams-per-user", "1"]);
    const first = await browser(strip);
    const second = await browser(strip);
    try {
      const user = `crowded-${name}`;
      const holder = await first.context.newPage();
      await signInAs(holder, own.base, user);
      await holder.evaluate(async () => {
        const { default: Herald } = await import("/herald.js");
        window.h = await Herald.connect();
      });
      const page = await second.context.newPage();
      await signInAs(page, own.base, user);
      const refused = await page.evaluate(async () => {
        const { default: Herald } = await import("/herald.js");
        const started = performance.now();
        const outcome = await Herald.connect().then(() => null, (e) => ({ name: e.name, status: e.status, code: e.code }));
        return { ...outcome, took: performance.now() - started };
      });
      assert.deepEqual([refused.name, refused.status, refused.code], ["HeraldError", 429, "too_many_streams"]);
      assert.ok(refused.took < 10_000, `connect settled in ${refused.took} ms`);
      const answered = await eventsAnswered(own.base, 429);
      await new Promise((r) => setTimeout(r, 2_500)); // longer than the first backoff (1 s) and the next (2 s)
      assert.equal(await eventsAnswered(own.base, 429), answered, "the refused client stopped");
      assert.equal(await holder.evaluate(() => window.h.closed), false, "the first browser keeps its stream");
    } finally {
      await first.close();
      await second.close();
      await own.stop();
    }
  });
}

for (const [name, strip] of TRANSPORTS.filter(([name]) => name !== "tab")) {
  test(`a tab back with a position the server no longer has gets reset alone; the live tab misses nothing (${name})`, async () => {
    const user = `gone-${name}`;
    const { context, close } = await browser(strip);
    try {
      const connect = (page) => page.evaluate(async () => {
        const { default: Herald } = await import("/herald.js");
        window.h = await Herald.connect();
        window.got = [];
        for (const n of ["ready", "reset", "notification"]) window.h.on(n, (d) => window.got.push([n, d.title ?? null]));
      });
      const [back, live] = [await context.newPage(), await context.newPage()];
      await signInAs(back, herald.base, user);
      await live.goto(`${herald.base}/healthz`);
      await connect(back);
      await connect(live);
      const first = await publish(herald.base, user, "first");
      for (const page of [back, live]) await page.waitForFunction(() => window.got.some(([n]) => n === "notification"));
      await back.goto("about:blank"); // it keeps its position (sessionStorage)
      // More changes than the log keeps (1,000, trimmed 100 over), one after another
      const bearer = { authorization: `Bearer ${token("--sub", user)}`, "content-type": "application/json" };
      for (let i = 0; i < 1_250; i++) {
        const r = await fetch(`${herald.base}/notifications/${first}`, { method: "PATCH", headers: bearer, body: JSON.stringify({ read: i % 2 === 0 }) });
        assert.equal(r.status, 200);
      }
      await back.goto(`${herald.base}/healthz`);
      await connect(back);
      await back.waitForFunction(() => window.got.some(([n]) => n === "reset"), null, { timeout: 10_000 })
        .catch(() => assert.fail("the tab that came back got no reset"));
      await publish(herald.base, user, "after");
      for (const page of [back, live]) {
        await page.waitForFunction(() => window.got.some(([, t]) => t === "after"), null, { timeout: 10_000 });
      }
      const got = await live.evaluate(() => window.got);
      assert.deepEqual(got.filter(([n]) => n === "reset"), [], "the live tab was not reset");
      assert.deepEqual(got.filter(([n]) => n === "notification").map(([, t]) => t), ["first", "after"], "each once");
      const counts = await (await fetch(`${herald.base}/notifications/counts`, { headers: bearer })).json();
      assert.equal(await live.evaluate(() => window.h.unreadCount), counts.unread);
      assert.equal(await back.evaluate(() => window.h.unreadCount), counts.unread);
    } finally {
      await close();
    }
  });
}

for (const [name, strip] of TRANSPORTS.filter(([name]) => name !== "tab")) {
  test(`signing in as another user in a second tab: the first tab gets the new user's ready, then reset (${name})`, async () => {
    const { context, close } = await browser(strip);
    try {
      const [alice, bob] = [`first-${name}`, `second-${name}`];
      const pages = [await context.newPage(), await context.newPage()];
      for (const [page, user] of [[pages[0], alice], [pages[1], bob]]) {
        await signInAs(page, herald.base, user);
        await page.evaluate(async () => {
          const { default: Herald } = await import("/herald.js");
          window.h = await Herald.connect();
          window.got = [];
          for (const n of ["ready", "reset", "notification"]) window.h.on(n, (d) => window.got.push([n, d.user ?? d.title ?? null]));
        });
      }
      await pages[0].waitForFunction((u) => window.h.user === u, bob, { timeout: 5_000 })
        .catch(() => assert.fail("the first tab's stream did not move to the new user"));
      await pages[0].waitForFunction(() => window.got.some(([n]) => n === "reset"), null, { timeout: 5_000 })
        .catch(() => assert.fail("the first tab got no reset"));
      const got = await pages[0].evaluate(() => window.got);
      assert.deepEqual(got.filter(([n]) => n !== "notification"), [["ready", bob], ["reset", null]], "one ready, then one reset");
    } finally {
      await close();
    }
  });
}

test("a follower that gets the leader lock before the relayed revoked still signs out (leader)", async () => {
  const user = "leaving-late";
  const { context, close } = await browser(["SharedWorker"]);
  try {
    // Hold back relayed `revoked` messages, so the old leader's lock (released when it is
    // revoked) reaches the follower first and the follower starts a stream of its own.
    await context.addInitScript(() => {
      const native = Object.getOwnPropertyDescriptor(BroadcastChannel.prototype, "onmessage");
      Object.defineProperty(BroadcastChannel.prototype, "onmessage", {
        configurable: true,
        get() { return native.get.call(this); },
        set(fn) {
          native.set.call(this, (m) => (m.data?.name === "revoked" ? setTimeout(() => fn(m), 300) : fn(m)));
        },
      });
    });
    const first = await context.newPage();
    await signIn(first, user);
    const second = await openTab(context);
    assert.equal(await transport(second), "leader");
    await second.evaluate(() => window.heraldDemo.herald.on("revoked", () => (window.revokedAt = Date.now())));
    const started = Date.now();
    await signOutWithoutForgetting(first);
    await second.waitForSelector("#login-view:not([hidden])", { timeout: 5_000 });
    const took = (await second.evaluate(() => window.revokedAt)) - started;
    assert.ok(took < 1_000, `the follower signed out after ${took} ms`);
    assert.ok(await second.evaluate(() => window.heraldDemo.herald.closed), "the follower's client closed");
    await until(async () => (await streams(user)).length === 0, "the streams to end");
  } finally {
    await close();
  }
});

test("a tab that said hello while no tab held the stream is brought up to date by the next leader (leader)", async () => {
  const user = "between-leaders";
  const { context, close } = await browser(["SharedWorker"]);
  try {
    const first = await context.newPage();
    await signIn(first, user);
    await shows(first, await publish(herald.base, user, "seen by the first tab"));
    const behind = await storedPosition(first);
    const missed = await publish(herald.base, user, "the one a reloaded tab missed");
    await shows(first, missed);
    // A page without the client queues for the leader lock behind the first tab and gets it
    // when that tab closes: until it lets go, no tab holds the stream.
    const holder = await context.newPage();
    await holder.goto(`${herald.base}/healthz`);
    await holder.evaluate(() => {
      window.held = new Promise((got) => {
        navigator.locks.request("herald:/:leader", () => {
          got();
          return new Promise((release) => (window.release = release));
        });
      });
    });
    await first.close({ runBeforeUnload: true });
    await holder.evaluate(() => window.held);
    // Two tabs open meanwhile, so their hellos reach no leader: the first to get the lock
    // leads from the browser's position; the other is a reloaded tab whose own position is
    // before `missed`, which the new leader must replay to it when it joins.
    const second = await context.newPage();
    await second.goto(`${herald.base}/`);
    await second.waitForFunction(() => navigator.locks.query().then((q) => q.pending.length === 1));
    const third = await context.newPage();
    await third.addInitScript((position) => {
      sessionStorage.setItem("herald:position:/", JSON.stringify(position));
      window.relayed = [];
      const native = Object.getOwnPropertyDescriptor(BroadcastChannel.prototype, "onmessage");
      Object.defineProperty(BroadcastChannel.prototype, "onmessage", {
        configurable: true,
        get() { return native.get.call(this); },
        set(fn) {
          native.set.call(this, (m) => {
            if (m.data?.type === "event") window.relayed.push(m.data.data?.id);
            fn(m);
          });
        },
      });
    }, behind);
    await third.goto(`${herald.base}/`);
    await third.waitForFunction(() => navigator.locks.query().then((q) => q.pending.length === 2));
    await holder.evaluate(() => window.release());
    await waitReady(second);
    await waitReady(third);
    await third.waitForFunction((id) => window.relayed.includes(id), missed, { timeout: 5_000 });
    const id = await publish(herald.base, user, "after the hand-over");
    await shows(second, id);
    await shows(third, id);
    assert.equal((await streams(user)).length, 1);
  } finally {
    await close();
  }
});

test("a SharedWorker whose script does not load: the tabs fall back to a leader and share one stream", async () => {
  const user = "worker-fails";
  const { context, close } = await browser();
  try {
    await failWorker(context);
    const first = await context.newPage();
    await signIn(first, user);
    const second = await openTab(context);
    for (const page of [first, second]) assert.equal(await transport(page), "leader");
    const id = await publish(herald.base, user, "through the leader");
    await shows(first, id);
    await shows(second, id);
    assert.equal((await streams(user)).length, 1);
  } finally {
    await close();
  }
});

test("a SharedWorker script held unanswered: after 10 s the tab shares the stream through a leader", async () => {
  const user = "worker-held";
  const { context, close } = await browser();
  try {
    await context.route("**/herald-worker.js", () => {}); // never answered
    const page = await context.newPage();
    await signIn(page, user, 30_000);
    assert.equal(await transport(page), "leader");
    await shows(page, await publish(herald.base, user, "through the leader"));
  } finally {
    await close();
  }
});

test("a tab whose SharedWorker did not load, beside one whose worker did: neither stream replaces the other", async () => {
  const user = "worker-fails-once";
  const { context, close } = await browser();
  try {
    await failWorker(context, "noworker"); // only in pages opened with ?noworker
    const shared = await context.newPage();
    await signIn(shared, user);
    const fallen = await context.newPage();
    await fallen.goto(`${herald.base}/?noworker`);
    await waitReady(fallen);
    assert.equal(await transport(shared), "shared-worker");
    assert.equal(await transport(fallen), "leader");
    for (const title of ["first", "second, after a while"]) {
      const id = await publish(herald.base, user, title);
      await shows(shared, id);
      await shows(fallen, id);
      assert.equal((await streams(user)).length, 2);
      await new Promise((r) => setTimeout(r, 1_500));
    }
  } finally {
    await close();
  }
});

for (const [name, strip] of TRANSPORTS.slice(0, 2)) {
  test(`a shared stream that was replaced starts again from where it was for a tab that joins (${name})`, async () => {
    const user = `replaced-shared-${name}`;
    const { context, close } = await browser(strip);
    try {
      const first = await context.newPage();
      await signIn(first, user);
      await bareClient(first);
      await first.evaluate(() => {
        window.replaced = 0;
        window.h.on("replaced", () => (window.replaced += 1));
        // another stream of this session, outside the client: the shared one ends with `replaced`
        window.other = new EventSource("/events");
      });
      await first.waitForFunction(() => window.replaced > 0, null, { timeout: 10_000 });
      await first.evaluate(() => window.other.close());
      await until(async () => (await streams(user)).length === 0, "the other stream to end");
      // Published while no stream of the browser runs: the first tab gets it once the stream
      // starts again from where it was, which a tab that joins makes it do; also a tab ahead
      // of it (no stored position: it starts from its first page's, which has it).
      const during = await publish(herald.base, user, "while replaced");
      const joining = await context.newPage();
      await joining.goto(`${herald.base}/healthz`);
      await joining.evaluate(() => localStorage.clear());
      await bareClient(joining);
      assert.equal(await joining.evaluate(() => window.h.transport), name);
      const after = await publish(herald.base, user, "after the replacement");
      for (const [page, ids] of [[first, [during, after]], [joining, [after]]]) {
        await page.waitForFunction((ids) => ids.every((id) => JSON.parse(sessionStorage.getItem("events") ?? "[]").includes(id)), ids, { timeout: 10_000 });
      }
      assert.deepEqual((await received(first)).filter((id) => id === during), [during], "once");
      assert.equal((await streams(user)).length, 1);
    } finally {
      await close();
    }
  });
}

test("replaced reaches the app although EventSource repeats the previous id on it (tab)", async () => {
  const { context, close } = await browser(["SharedWorker", "locks"]);
  try {
    const page = await context.newPage();
    // the tab's id, from its stream's URL (sessionStorage holds it only while the page is gone)
    let tab;
    page.on("request", (r) => r.url().includes("/events?") && (tab = new URL(r.url()).searchParams.get("tab")));
    await signIn(page, "replaced-user");
    await shows(page, await publish(herald.base, "replaced-user", "so the stream has an id"));
    await page.evaluate((tab) => {
      window.replaced = 0;
      window.heraldDemo.herald.on("replaced", () => (window.replaced += 1));
      // a second stream of the same (session, tab) ends this tab's stream with `replaced`
      window.other = new EventSource(`/events?tab=${tab}`);
    }, tab);
    await page.waitForFunction(() => window.replaced === 1, null, { timeout: 5_000 });
    await page.evaluate(() => window.other.close());
  } finally {
    await close();
  }
});

/** A user's request with a Bearer token: the parsed body (null for 204). */
async function asUser(user, method, path, body) {
  const r = await fetch(`${herald.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token("--sub", user)}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${await r.clone().text()}`);
  return r.status === 204 ? null : r.json();
}

/** The tray and count a user has on the server: `{ ids, unread, read }` (ids newest first). */
async function serverTray(user) {
  const page = await asUser(user, "GET", "/notifications");
  return { ids: page.notifications.map((n) => n.id), unread: page.unread_count, read: page.notifications.filter((n) => n.read_at).map((n) => n.id) };
}

for (const [name, strip] of TRANSPORTS) {
  test(`markRead, markUnread, markSeen, archive, delete and markAllRead change the tray and reach every tab (${name})`, async () => {
    const user = `api-${name}`;
    const { context, close } = await browser(strip);
    try {
      const first = await context.newPage();
      await signIn(first, user);
      const second = await openTab(context);
      assert.equal(await transport(second), name);
      const [a, b, c] = [await publish(herald.base, user, "a"), await publish(herald.base, user, "b"), await publish(herald.base, user, "c")];
      for (const page of [first, second]) {
        await shows(page, c);
        await page.evaluate(() => {
          window.changes = [];
          for (const kind of ["read", "unread", "seen", "archived", "unarchived", "deleted"]) {
            window.heraldDemo.herald.on(kind, (d) => window.changes.push([kind, [...d.ids].sort(), d.unread_count, d.unseen_count]));
          }
        });
      }
      /**
       * Call `method(arg)` on the first tab's client: its counts are `change`'s once the call
       * resolves (it waits for its stream to show the write); both tabs then see `change`.
       */
      const step = async (method, arg, change) => {
        const counts = await first.evaluate(async ([m, x]) => {
          const h = window.heraldDemo.herald;
          await h[m](x);
          return [h.unreadCount, h.unseenCount];
        }, [method, arg]);
        assert.deepEqual(counts, change.slice(2), `the first tab's counts once ${method} resolved`);
        for (const [i, page] of [first, second].entries()) {
          await page.waitForFunction((n) => window.changes.length >= n, step.count + 1, { timeout: 10_000 })
            .catch(async () => assert.fail(`tab ${i + 1} after ${method}: ${JSON.stringify(await page.evaluate(() => window.changes))}`));
          const changes = await page.evaluate(() => window.changes);
          assert.deepEqual(changes.at(-1), change, `tab ${i + 1} after ${method}: ${JSON.stringify(changes)}`);
          const { unreadCount, unseenCount } = await page.evaluate(() => {
            const { unreadCount, unseenCount } = window.heraldDemo.herald;
            return { unreadCount, unseenCount };
          });
          assert.deepEqual([unreadCount, unseenCount], change.slice(2), `tab ${i + 1} counts after ${method}`);
        }
        step.count += 1;
      };
      step.count = 0;
      await step("markSeen", [b], ["seen", [b], 3, 2]);
      await step("markRead", a, ["read", [a], 2, 1]);
      await step("markUnread", a, ["unread", [a], 3, 1]);
      await step("archive", c, ["archived", [c], 2, 0]);
      await step("unarchive", c, ["unarchived", [c], 3, 1]);
      await step("delete", b, ["deleted", [b], 2, 1]);
      assert.deepEqual(await serverTray(user), { ids: [c, a], unread: 2, read: [] });
      await step("markAllRead", undefined, ["read", [a, c].sort(), 0, 0]);
      assert.deepEqual(await serverTray(user), { ids: [c, a], unread: 0, read: [c, a] });
      await first.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
      await second.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
      // list() answers from the server, with the client's own query
      const listed = await second.evaluate(() => window.heraldDemo.herald.list({ limit: 1 }));
      assert.deepEqual(listed.notifications.map((n) => n.id), [c]);
      assert.equal(listed.unread_count, 0);
      assert.equal(listed.unseen_count, 0);
      assert.ok(listed.next, "a next cursor after one of two");
      assert.match(listed.position, /^[0-9a-z]+\.\d+$/);
    } finally {
      await close();
    }
  });
}

test("reset, revoked and forgetPosition on the client's own API (tab)", async () => {
  const user = "api-control";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    const ids = [await publish(herald.base, user, "one"), await publish(herald.base, user, "two")];
    await shows(page, ids[1]);
    // a bare page of the same origin, with only our own client on it
    await page.goto(`${herald.base}/healthz`);
    await page.evaluate(async () => {
      localStorage.setItem("herald:position:/", JSON.stringify({ id: "0123456789ab.1", unread: 5, at: Date.now() }));
      // A first page whose position the server does not know (a log that was lost since).
      const native = window.fetch;
      window.fetch = async (...args) => {
        const r = await native(...args);
        if (!String(args[0]).includes("/notifications?")) return r;
        const page = await r.json();
        return new Response(JSON.stringify({ ...page, position: "0123456789ab.1" }), { status: r.status });
      };
      const { default: Herald } = await import("/herald.js");
      window.resets = [];
      window.h = await Herald.connect({ transport: "tab" });
      window.h.on("reset", (d) => window.resets.push(d));
      window.fetch = native;
    });
    // the position is of another log: the server answers `reset`, with the true counts
    await page.waitForFunction(() => window.resets.length === 1, null, { timeout: 10_000 });
    assert.deepEqual(await page.evaluate(() => window.resets), [{ unread_count: 2, unseen_count: 2 }]);
    assert.equal(await page.evaluate(() => window.h.unreadCount), 2);
    await until(async () => (await storedPosition(page))?.unread === 2, "the position after the reset");
    const position = await storedPosition(page);
    assert.notEqual(tagOf(position.id), "0123456789ab", `the position moved to the user's log: ${position.id}`);
    // live events still arrive after the reset, and move the position
    await page.evaluate(() => { window.seen = []; window.h.on("notification", (n) => window.seen.push(n.id)); });
    const three = await publish(herald.base, user, "three");
    await page.waitForFunction((id) => window.seen.includes(id), three, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => window.h.unreadCount), 3);

    // revoked: the app hears it once, with the reason, and the client closes for good
    await page.evaluate(() => { window.revoked = []; window.h.on("revoked", (d) => window.revoked.push(d)); });
    await signOutWithoutForgetting(page);
    await page.waitForFunction(() => window.revoked.length === 1, null, { timeout: 5_000 });
    assert.deepEqual(await page.evaluate(() => window.revoked), [{ reason: "logout" }]);
    assert.equal(await page.evaluate(() => window.h.closed), true);
    await until(async () => (await streams(user)).length === 0, "the stream to end");

    // forgetPosition: the next user on this browser starts from nothing of this one's
    assert.ok(await storedPosition(page), "a position is kept until it is forgotten");
    await page.evaluate(async () => (await import("/herald.js")).forgetPosition(""));
    assert.equal(await storedPosition(page), null);
  } finally {
    await close();
  }
});

// ---- The tray beyond read/unread, in the demo ----

const badgeIs = (page, n) =>
  page.waitForFunction((n) => document.querySelector("#badge").dataset.count === String(n), n, { timeout: 10_000 });

test("the badge counts unseen and clears in every tab when the tray opens in one; a collapsed item shows its count", async () => {
  const user = "badge-user";
  const { context, close } = await browser();
  try {
    const first = await context.newPage();
    await signIn(first, user);
    const second = await openTab(context);
    const one = await publish(herald.base, user, "one");
    const two = await publish(herald.base, user, "two");
    // three publishes with one collapse key: one item that counts them, and one unseen more
    let build;
    for (let i = 0; i < 3; i++) {
      build = (await publishNotification(herald.base, user, { title: "Build finished", collapse_key: "build-main" })).ids[user];
    }
    for (const page of [first, second]) {
      for (const id of [one, two, build]) await shows(page, id);
      await badgeIs(page, 3);
      assert.equal(await page.textContent(`#tray [data-id="${build}"] .count`), "×3");
      assert.equal(await page.locator("#tray .item").count(), 3, "the collapsed ones are gone");
    }
    await openTray(first);
    for (const page of [first, second]) {
      await badgeIs(page, 0);
      assert.equal(await page.evaluate(() => window.heraldDemo.herald.unreadCount), 3, "seen is not read");
    }
    assert.ok(await second.isHidden("#tray-panel"), "the other tab's tray stays closed");
    await publish(herald.base, user, "three");
    for (const page of [first, second]) await badgeIs(page, 1);
    // archived from the item's menu: gone from the inbox of every tab, listed as archived
    await first.click(`#tray [data-id="${one}"] .more-button`);
    await first.click(`#tray [data-id="${one}"] .menu .archive`);
    for (const page of [first, second]) await page.waitForSelector(`#tray [data-id="${one}"]`, { state: "detached", timeout: 10_000 });
    const archived = await asUser(user, "GET", "/notifications?archived=only");
    assert.deepEqual(archived.notifications.map((n) => n.id), [one]);
  } finally {
    await close();
  }
});

test("an action button is taken once and every tab shows the outcome; opening an item's link reads it", async () => {
  const user = "action-user";
  const { context, close } = await browser();
  try {
    const first = await context.newPage();
    await signIn(first, user);
    const second = await openTab(context);
    const actions = [{ id: "approve", label: "Approve" }, { id: "reject", label: "Reject" }];
    const id = (await publishNotification(herald.base, user, { title: "Deploy v42?", actions })).ids[user];
    for (const page of [first, second]) {
      await shows(page, id);
      assert.equal(await page.locator(`#tray [data-id="${id}"] .action`).count(), 2);
    }
    await openTray(first);
    await first.click(`#tray [data-id="${id}"] .action[data-action="approve"]`);
    for (const page of [first, second]) {
      const outcome = await page.waitForSelector(`#tray [data-id="${id}"]:not(.unread) .outcome`, { state: "attached", timeout: 10_000 });
      assert.match(await outcome.textContent(), /Approve/);
      assert.equal(await page.locator(`#tray [data-id="${id}"] .action`).count(), 0, "no buttons after the action");
    }
    const stored = (await asUser(user, "GET", "/notifications")).notifications.find((n) => n.id === id);
    assert.equal(stored.action?.id, "approve");
    assert.ok(stored.read_at, "taking an action reads the notification");
    const again = await second.evaluate(async (id) => {
      try {
        await window.heraldDemo.herald.takeAction(id, "reject");
        return null;
      } catch (e) {
        return { status: e.status, code: e.code };
      }
    }, id);
    assert.deepEqual(again, { status: 409, code: "conflict" });

    const linked = (await publishNotification(herald.base, user, { title: "Report ready", link: `${herald.base}/healthz` })).ids[user];
    await shows(first, linked);
    const [tab] = await Promise.all([context.waitForEvent("page"), first.click(`#tray [data-id="${linked}"] a.open`)]);
    await tab.close();
    for (const page of [first, second]) {
      await page.waitForSelector(`#tray [data-id="${linked}"]:not(.unread)`, { state: "attached", timeout: 10_000 });
    }
  } finally {
    await close();
  }
});

test("a snoozed item leaves the tray and comes back when its time comes", async () => {
  const user = "snooze-user";
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    await signIn(page, user);
    const id = await publish(herald.base, user, "remind me");
    await shows(page, id);
    await badgeIs(page, 1);
    // Every change of the item's presence in the tray, whenever it happens.
    await page.evaluate((id) => {
      const present = () => Boolean(document.querySelector(`#tray [data-id="${id}"]`));
      window.trayLog = [present()];
      new MutationObserver(() => present() !== window.trayLog.at(-1) && window.trayLog.push(present()))
        .observe(document.querySelector("#tray"), { childList: true });
    }, id);
    const until = new Date(Date.now() + 3_000).toISOString();
    const snoozed = await asUser(user, "PATCH", `/notifications/${id}`, { snoozed_until: until });
    assert.ok(snoozed.snoozed_until, "the answer carries snoozed_until");
    await page.waitForFunction(() => window.trayLog.length >= 3, null, { timeout: 30_000 })
      .catch(async () => assert.fail(`tray presence: ${JSON.stringify(await page.evaluate(() => window.trayLog))}`));
    assert.deepEqual(await page.evaluate(() => window.trayLog), [true, false, true], "gone, then back");
    await badgeIs(page, 1);
    const woken = await page.evaluate((id) => window.heraldEvents.filter((e) => e === id).length, id);
    assert.equal(woken, 2, "published, then woken: two notification events");
  } finally {
    await close();
  }
});

test("the demo loads quietly, keeps Sign out on screen for a long name, and saves a muted category", async () => {
  const { context, close } = await browser();
  try {
    const page = await context.newPage();
    const noise = [];
    page.on("console", (m) => noise.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => noise.push(`uncaught: ${e.message}`));
    page.on("response", (r) => r.status() >= 400 && noise.push(`${r.status()} ${r.url()}`));
    page.on("requestfailed", (r) => noise.push(`failed: ${r.url()}`));
    await page.setViewportSize({ width: 390, height: 760 });
    await page.goto(`${herald.base}/`);
    await page.waitForSelector("#login-view:not([hidden])");
    const user = `${"someone-with-a-very-long-name-".repeat(3)}at-example.org`;
    await page.fill("#login-user", user);
    await page.click("#login-submit");
    await waitReady(page);
    const box = await page.locator("#sign-out").boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `Sign out on screen: ${JSON.stringify(box)}`);

    await page.fill("#mute-category", "marketing");
    await page.click("#mute-form button");
    await page.waitForSelector('#categories input[data-category="marketing"]:checked', { state: "attached", timeout: 10_000 });
    assert.deepEqual((await asUser(user, "GET", "/preferences")).categories.marketing, { muted: true });
    const muted = await publishNotification(herald.base, user, { title: "Spring sale", category: "marketing" });
    assert.equal(muted.suppressed, 1);
    assert.deepEqual(noise, [], "nothing in the console, no failed request");
  } finally {
    await close();
  }
});
