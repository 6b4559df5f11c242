// The admin page (`--admin`) in headless Chromium, under a --base-path so its relative URLs are
// exercised: a token from the form shows the nodes (a user token shows a clear 403), a user's
// presence and live tail show a notification published elsewhere, and the publish form
// publishes. The page's strict CSP must not block anything it needs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, token, publishNotification, launchBrowser } from "./harness.mjs";

let herald;
/** Herald's root under its base path (the start-up line may or may not name the path). */
let root;
let browser;
let page;
/** CSP violations and uncaught errors of the page (the refused token's 403 is expected). */
const problems = [];

before(async () => {
  herald = await startHerald(["--admin", "--base-path", "/edge/"]);
  root = `${new URL(herald.base).origin}/edge`;
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(`${root}/admin`);
  assert.ok(page.url().endsWith("/edge/admin/"), page.url());
});
after(async () => {
  await browser?.close();
  herald?.stop();
});

async function useToken(value) {
  await page.fill("#token", value);
  await page.click("#token-form button[type=submit]");
}

test("a service token shows the nodes; a user token is refused with a clear 403", async () => {
  await page.waitForSelector("#nodes-error:not([hidden])");
  await useToken(token("--sub", "alice"));
  await page.waitForFunction(() => document.querySelector("#nodes-error").textContent.includes("403 Forbidden"));

  await useToken(token("--scope", "publish"));
  const row = await page.waitForSelector("#nodes tr.self", { timeout: 10_000 });
  assert.ok(await page.isHidden("#nodes-error"));
  const cells = await row.$$eval("td", (tds) => tds.map((td) => td.textContent));
  assert.match(cells[0], /^node-/);
  assert.equal(cells[1], "0");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("herald-admin:token")?.length > 0), true);
});

test("the live tail shows a notification published for that user, not for another", async () => {
  await page.fill("#user", "alice");
  await page.click("#user-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#tail-state").textContent.startsWith("live on"), null, { timeout: 10_000 });
  assert.equal(await page.textContent("#presence-state"), "offline");

  await publishNotification(root, "bob", { title: "for bob" });
  const { ids } = await publishNotification(root, "alice", { title: "published by a service" });
  const item = await page.waitForSelector(`#tail li[data-event="notification"][data-id="${ids.alice}"]`, { timeout: 10_000 });
  assert.match(await item.textContent(), /published by a service/);
  assert.equal(await page.locator("#tail li").count(), 1, "bob's notification is not in alice's tail");
});

test("the form publishes and shows the answer", async () => {
  await page.fill("#pub-users", "alice, carol");
  await page.fill("#pub-title", "from the admin form");
  await page.fill("#pub-category", "ops");
  await page.fill("#pub-data", '{"ticket": 7}');
  await page.click("#pub-submit");
  await page.waitForSelector("#publish-result[data-status]", { timeout: 10_000 });
  assert.equal(await page.getAttribute("#publish-result", "data-status"), "202");
  const answer = await page.textContent("#publish-result");
  const body = JSON.parse(answer.slice(answer.indexOf("{")));
  assert.equal(body.count, 2);
  // alice's tail shows it, with the fields the form set
  const item = await page.waitForSelector(`#tail li[data-id="${body.ids.alice}"]`, { timeout: 10_000 });
  const text = await item.textContent();
  assert.match(text, /from the admin form/);
  assert.match(text, /"category":"ops"/);
  assert.match(text, /"ticket":7/);
  assert.deepEqual(problems, [], "no CSP violation, no uncaught error");
});
