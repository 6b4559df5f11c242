// The browser client in real headless Chromium against a running Herald (--dev demo page):
// tab sharing through SharedWorker, leader election without it, per-tab fallback, reload
// without loss, the tray of a user who was offline, sign-out reaching every tab, and a second
// user on the same browser who must not resume from the first one's position; and the client's
// own API (markRead, markUnread, delete, markAllRead, list, reset, revoked, forgetPosition).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { startHerald, token, publish, until } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let herald;
before(async () => { herald = await startHerald(["--dev"]); });
after(() => herald?.stop());

/** A fresh browser profile; `strip` removes APIs before any page script runs. */
async function browser(strip = []) {
  const dir = mkdtempSync(path.join(tmpdir(), "herald-chromium-"));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ARGS });
  if (strip.length) {
    await context.addInitScript((names) => {
      for (const name of names) {
        if (name === "locks") Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined, configurable: true });
        else Object.defineProperty(window, name, { value: undefined, configurable: true, writable: true });
      }
    }, strip);
  }
  return { context, close: async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); } };
}

async function waitReady(page) {
  await page.waitForFunction(() => window.heraldDemo?.ready === true, null, { timeout: 15_000 });
}

async function signIn(page, user) {
  await page.goto(`${herald.base}/`);
  await page.fill("#login-user", user);
  await page.click("#login-submit");
  await waitReady(page);
}

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

const shows = (page, id) => page.waitForSelector(`[data-id="${id}"]`, { timeout: 10_000 });
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

    await second.click(`[data-id="${id}"] .toggle`);
    await first.waitForSelector(`[data-id="${id}"]:not(.unread)`, { timeout: 10_000 });
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
  test(`a tab that joins with a position of another log is reset alone (${name})`, async () => {
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
        localStorage.setItem("herald:position:/", JSON.stringify({ id: "0123456789ab.1", unread: 5 }));
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

test("replaced reaches the app although EventSource repeats the previous id on it (tab)", async () => {
  const { context, close } = await browser(["SharedWorker", "locks"]);
  try {
    const page = await context.newPage();
    await signIn(page, "replaced-user");
    await shows(page, await publish(herald.base, "replaced-user", "so the stream has an id"));
    await page.evaluate(() => {
      window.replaced = 0;
      window.heraldDemo.herald.on("replaced", () => (window.replaced += 1));
      // a second stream of the same (session, tab) ends this tab's stream with `replaced`
      window.other = new EventSource(`/events?tab=${sessionStorage.getItem("herald:tab:/")}`);
    });
    await page.waitForFunction(() => window.replaced === 1, null, { timeout: 5_000 });
    await page.evaluate(() => window.other.close());
  } finally {
    await close();
  }
});

/** The tray and count a user has on the server: `{ ids, unread, read }` (ids newest first). */
async function serverTray(user) {
  const r = await fetch(`${herald.base}/notifications`, { headers: { authorization: `Bearer ${token("--sub", user)}` } });
  const page = await r.json();
  return { ids: page.notifications.map((n) => n.id), unread: page.unread_count, read: page.notifications.filter((n) => n.read_at).map((n) => n.id) };
}

for (const [name, strip] of TRANSPORTS) {
  test(`markRead, markUnread, delete and markAllRead change the tray and reach every tab (${name})`, async () => {
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
          for (const kind of ["read", "unread", "deleted"]) {
            window.heraldDemo.herald.on(kind, (d) => window.changes.push([kind, [...d.ids].sort(), d.unread_count]));
          }
        });
      }
      /** Call `method(arg)` on the first tab's client; both tabs then see `change` and `unread`. */
      const step = async (method, arg, change) => {
        await first.evaluate(([m, x]) => window.heraldDemo.herald[m](x), [method, arg]);
        for (const [i, page] of [first, second].entries()) {
          await page.waitForFunction((n) => window.changes.length >= n, step.count + 1, { timeout: 10_000 })
            .catch(async () => assert.fail(`tab ${i + 1} after ${method}: ${JSON.stringify(await page.evaluate(() => window.changes))}`));
          const changes = await page.evaluate(() => window.changes);
          assert.deepEqual(changes.at(-1), change, `tab ${i + 1} after ${method}: ${JSON.stringify(changes)}`);
          assert.equal(await page.evaluate(() => window.heraldDemo.herald.unreadCount), change[2], `tab ${i + 1} count after ${method}`);
        }
        step.count += 1;
      };
      step.count = 0;
      await step("markRead", a, ["read", [a], 2]);
      await step("markUnread", a, ["unread", [a], 3]);
      await step("delete", b, ["deleted", [b], 2]);
      assert.deepEqual(await serverTray(user), { ids: [c, a], unread: 2, read: [] });
      await step("markAllRead", undefined, ["read", [a, c].sort(), 0]);
      assert.deepEqual(await serverTray(user), { ids: [c, a], unread: 0, read: [c, a] });
      await first.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
      await second.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
      // list() answers from the server, with the client's own query
      const listed = await second.evaluate(() => window.heraldDemo.herald.list({ limit: 1 }));
      assert.deepEqual(listed.notifications.map((n) => n.id), [c]);
      assert.equal(listed.unread_count, 0);
      assert.ok(listed.next, "a next cursor after one of two");
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
      localStorage.setItem("herald:position:/", JSON.stringify({ id: "0123456789ab.1", unread: 5 }));
      const { default: Herald } = await import("/herald.js");
      window.resets = [];
      window.h = await Herald.connect({ transport: "tab" });
      window.h.on("reset", (d) => window.resets.push(d));
    });
    // the stored position is of another log: the server answers `reset`, with the true count
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
