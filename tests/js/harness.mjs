// Starts the real herald binary on a free port (HTTP or HTTPS), signs tokens with its own `token`
// command, and launches headless Chromium for the browser tests.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.HERALD_BIN ?? path.join(root, "target/debug/herald");
export const SECRET = "js-test-secret";

/**
 * The origin in herald's start-up line `herald listening on http(s)://ADDR/[base path/]`
 * (`https://127.0.0.1:4000`; the base path is left out, tests add it); null for other lines.
 */
export function listeningBase(line) {
  // `http://host:port/base/`: the origin only; tests add the base path themselves.
  const m = line.match(/^herald listening on (https?:\/\/\S+)/);
  return m ? new URL(m[1]).origin : null;
}

/**
 * Start `herald serve`; resolves to { base, stop() } once it prints its address (http or https).
 * `listen`: the address to bind (a free port by default; a stopped server's, to restart it).
 * `stop()` kills it and resolves once it has exited.
 */
export function startHerald(extra = [], { listen = "127.0.0.1:0" } = {}) {
  const child = spawn(BIN, ["--listen", listen, "--jwt-secret", SECRET, ...extra], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, HERALD_LOG: process.env.HERALD_LOG ?? "warn" },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("herald did not start")), 10_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const base = listeningBase(line);
      if (base) {
        clearTimeout(timer);
        const exited = new Promise((done) => child.once("exit", done));
        resolve({ base, stop: () => (child.kill("SIGKILL"), exited) });
      }
    });
    child.on("exit", (code) => reject(new Error(`herald exited with ${code}`)));
  });
}

/**
 * Arguments that turn Web Push on: a new key pair from `herald vapid-keys`, its PEM in a temp
 * file (removed when the test process exits). `{ args, publicKey }`.
 */
export function vapid() {
  const out = execFileSync(BIN, ["vapid-keys"]).toString();
  const pem = out.slice(0, out.indexOf("-----END PRIVATE KEY-----") + "-----END PRIVATE KEY-----".length);
  const dir = mkdtempSync(path.join(tmpdir(), "herald-vapid-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "vapid.pem");
  writeFileSync(file, `${pem}\n`, { mode: 0o600 });
  const publicKey = out.match(/^public_key: (\S+)$/m)[1];
  return { args: ["--vapid-private-key", file, "--vapid-subject", "mailto:ops@example.com"], publicKey };
}

export function token(...args) {
  return execFileSync(BIN, ["token", "--jwt-secret", SECRET, ...args]).toString().trim();
}

export async function publish(base, user, title) {
  return (await publishNotification(base, user, { title })).ids[user];
}

/** `POST /publish` of `notification` (any fields) to `user`; resolves to the response body. */
export async function publishNotification(base, user, notification) {
  const r = await fetch(`${base}/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${token("--scope", "publish")}`, "content-type": "application/json" },
    body: JSON.stringify({ users: [user], notification }),
  });
  if (r.status !== 202) throw new Error(`publish: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Resolve when `pred()` (sync or async) is true, polling; reject after 10 s. */
export async function until(pred, what = "condition", ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Chromium for the browser tests, and the flags that keep it quiet on a closed network. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/**
 * Headless Chromium with a fresh profile: `{ context, close() }`. `strip` names APIs removed
 * before any page script runs (`"SharedWorker"`, `"locks"` for Web Locks); `args` are extra flags;
 * `bfcache` keeps Chromium's back/forward cache on, as a user's browser has it (playwright turns it off).
 */
export async function launchBrowser({ strip = [], args = [], bfcache = false } = {}) {
  const { chromium } = await import("playwright-core");
  const dir = mkdtempSync(path.join(tmpdir(), "herald-chromium-"));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...args],
    ignoreDefaultArgs: bfcache ? ["--disable-back-forward-cache"] : [],
  });
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
