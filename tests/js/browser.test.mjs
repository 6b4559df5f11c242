// The browser client in real headless Chromium against a running Herald (--dev demo page):
// tab sharing through SharedWorker, leader election without it, per-tab fallback, reload
// without loss, and the tray of a user who was offline.
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
