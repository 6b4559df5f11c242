// Renders the --dev demo page in headless Chromium and writes docs/demo-wide.png and
// docs/demo-narrow.png. Run: node tests/js/screenshots.mjs (after cargo build).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startHerald, token, vapid } from "./harness.mjs";

const docs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs");
const herald = await startHerald(["--dev", ...vapid().args]); // Web Push on: the demo shows its toggle
const dir = mkdtempSync(path.join(tmpdir(), "herald-shots-"));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const publish = (notification) =>
    fetch(`${herald.base}/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${token("--scope", "publish")}`, "content-type": "application/json" },
      body: JSON.stringify({ users: ["alice"], notification }),
    }).then(async (r) => (r.ok ? (await r.json()).ids.alice : Promise.reject(new Error(`publish: ${r.status} ${await r.text()}`))));
  await publish({ title: "Nightly backup completed", body: "All 14 volumes verified.", source: "backup", category: "ops" });
  await publish({ title: "Alice commented on your pull request", body: "“Looks good, one nit on the retry logic.”",
    source: "git", category: "reviews", link: "https://git.example.com/herald/pull/118" });
  await publish({ title: "Deploy to staging failed", body: "Step 3/5: migrations timed out after 120 s.", source: "ci",
    category: "deploys", link: "https://ci.example.com/deploys/981" });
  for (const run of [1285, 1286, 1287]) {
    await publish({ title: "Build finished on main", body: `#${run}: all 342 tests passed.`, source: "ci", category: "builds", collapse_key: "build-main" });
  }
  await publish({ title: "Bob asks for the prod-db role", body: "For incident INC-42, until Friday.", source: "iam", category: "access",
    actions: [{ id: "approve", label: "Approve" }, { id: "deny", label: "Deny" }] });
  const page = await context.newPage();
  await page.setViewportSize({ width: 1100, height: 720 });
  await page.goto(`${herald.base}/`);
  await page.fill("#login-user", "alice");
  await page.click("#login-submit");
  await page.waitForFunction(() => window.heraldDemo?.ready === true);
  await page.waitForFunction(() => document.querySelector("#badge").dataset.count === "5");
  // One muted category, the tray opened (which marks everything seen), one item read.
  await page.fill("#mute-category", "marketing");
  await page.click("#mute-form button");
  await page.waitForSelector('#categories input[data-category="marketing"]:checked', { state: "attached" });
  await page.fill("#send-title", "Your report is ready");
  await page.click("#bell");
  await page.click("#tray li:nth-child(4) .toggle");
  await page.waitForSelector("#tray li:nth-child(4):not(.unread)");
  await page.waitForFunction(() => document.querySelector("#badge").dataset.count === "0");
  await page.screenshot({ path: path.join(docs, "demo-wide.png") });
  await page.setViewportSize({ width: 390, height: 760 });
  await page.screenshot({ path: path.join(docs, "demo-narrow.png") });
  console.log("wrote docs/demo-wide.png and docs/demo-narrow.png");
} finally {
  await context.close();
  rmSync(dir, { recursive: true, force: true });
  herald.stop();
}
