// Renders the --dev demo page in headless Chromium and writes docs/demo-wide.png and
// docs/demo-narrow.png. Run: node tests/js/screenshots.mjs (after cargo build).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startHerald, token } from "./harness.mjs";

const docs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs");
const herald = await startHerald(["--dev"]);
const dir = mkdtempSync(path.join(tmpdir(), "herald-shots-"));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  for (const [title, body] of [
    ["Nightly backup completed", "All 14 volumes verified."],
    ["Deploy to staging failed", "Step 3/5: migrations timed out after 120 s."],
    ["Alice commented on your pull request", "“Looks good, one nit on the retry logic.”"],
    ["Build #1287 finished", "All 342 tests passed in 4 min 12 s."],
  ]) {
    await fetch(`${herald.base}/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${token("--scope", "publish")}`, "content-type": "application/json" },
      body: JSON.stringify({ users: ["alice"], notification: { title, body, source: "ci", category: "builds" } }),
    });
  }
  const page = await context.newPage();
  await page.setViewportSize({ width: 1100, height: 640 });
  await page.goto(`${herald.base}/`);
  await page.fill("#login-user", "alice");
  await page.click("#login-submit");
  await page.waitForFunction(() => window.heraldDemo?.ready === true);
  await page.click("#tray li:nth-child(3) .toggle");
  await page.waitForSelector("#tray li:nth-child(3):not(.unread)");
  await page.fill("#send-title", "Your report is ready");
  await page.screenshot({ path: path.join(docs, "demo-wide.png") });
  await page.setViewportSize({ width: 390, height: 760 });
  await page.screenshot({ path: path.join(docs, "demo-narrow.png") });
  console.log("wrote docs/demo-wide.png and docs/demo-narrow.png");
} finally {
  await context.close();
  rmSync(dir, { recursive: true, force: true });
  herald.stop();
}
