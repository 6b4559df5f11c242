// The browser client over HTTPS (`--tls-cert`/`--tls-key`, HTTP/2 by ALPN) in headless Chromium
// with two tabs of the --dev demo page: both get a published notification live, through the
// SharedWorker and through the per-tab fallback (no SharedWorker, no Web Locks: each tab holds
// its own stream); and in the fallback both tabs' streams ride ONE HTTP/2 connection, as
// Chromium reports it (CDP `Network.responseReceived`: protocol and connectionId). The
// certificate is made here with openssl and pinned by its SPKI hash, so Chromium trusts it as it
// would a real one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { startHerald, token, launchBrowser } from "./harness.mjs";

let herald;
let dir;
let certPem;
/** `--ignore-certificate-errors-spki-list` for the test certificate. */
let pin;

/** A self-signed end-entity P-256 certificate for 127.0.0.1 (as tests/api/tls.rs makes one). */
function makeCert(into) {
  const cert = path.join(into, "herald.crt");
  const key = path.join(into, "herald.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-nodes", "-days", "1", "-subj", "/CN=herald-test",
    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
    "-addext", "keyUsage=digitalSignature", "-addext", "extendedKeyUsage=serverAuth",
    "-keyout", key, "-out", cert], { stdio: ["ignore", "ignore", "ignore"] });
  // base64(SHA-256(SubjectPublicKeyInfo DER)), the form Chromium's SPKI list takes
  const spki = execFileSync("openssl", ["x509", "-in", cert, "-pubkey", "-noout"]);
  const der = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], { input: spki });
  const hash = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: der }).toString("base64");
  return { cert, key, hash };
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "herald-https-"));
  const { cert, key, hash } = makeCert(dir);
  certPem = readFileSync(cert);
  pin = `--ignore-certificate-errors-spki-list=${hash}`;
  herald = await startHerald(["--dev", "--tls-cert", cert, "--tls-key", key]);
  assert.match(herald.base, /^https:\/\//);
});
after(() => {
  herald?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `POST /publish` over HTTPS, trusting only the test certificate; the new id. */
function publish(user, title) {
  const body = JSON.stringify({ users: [user], notification: { title } });
  return new Promise((resolve, reject) => {
    const req = request(`${herald.base}/publish`, {
      method: "POST",
      ca: certPem,
      headers: { authorization: `Bearer ${token("--scope", "publish")}`, "content-type": "application/json" },
    }, (res) => {
      let text = "";
      res.on("data", (chunk) => { text += chunk; });
      res.on("end", () => (res.statusCode === 202
        ? resolve(JSON.parse(text).ids[user])
        : reject(new Error(`publish: ${res.statusCode} ${text}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function waitReady(page) {
  await page.waitForFunction(() => window.heraldDemo?.ready === true, null, { timeout: 15_000 });
}

/** The `/events` responses a page's network saw (per CDP): `{ status, protocol, connectionId }`. */
async function watchStreams(context, page) {
  const seen = [];
  const cdp = await context.newCDPSession(page);
  cdp.on("Network.responseReceived", ({ response }) => {
    if (new URL(response.url).pathname === "/events") {
      seen.push({ status: response.status, protocol: response.protocol, connectionId: response.connectionId });
    }
  });
  await cdp.send("Network.enable");
  return seen;
}

/** Sign in on a first tab, open a second; both ready, on `transport`. */
async function twoTabs(context, transport) {
  const first = await context.newPage();
  const second = await context.newPage();
  const streams = [await watchStreams(context, first), await watchStreams(context, second)];
  const user = `tls-${transport}`;
  await first.goto(`${herald.base}/`);
  assert.equal(await first.evaluate(() => window.isSecureContext), true);
  await first.fill("#login-user", user);
  await first.click("#login-submit");
  await waitReady(first);
  await second.goto(`${herald.base}/`);
  await waitReady(second);
  for (const page of [first, second]) {
    assert.equal(await page.evaluate(() => window.heraldDemo.herald.transport), transport);
  }
  return { user, pages: [first, second], streams };
}

/** Publish to `user`; both pages show it live. */
async function bothShow(user, pages, title) {
  const id = await publish(user, title);
  for (const page of pages) {
    await page.waitForSelector(`#tray [data-id="${id}"]`, { state: "attached", timeout: 10_000 });
  }
}

test("over HTTPS two tabs sharing a SharedWorker both get a notification live", async () => {
  const { context, close } = await launchBrowser({ args: [pin] });
  try {
    const { user, pages } = await twoTabs(context, "shared-worker");
    await bothShow(user, pages, "over https, shared");
  } finally {
    await close();
  }
});

test("over HTTPS the per-tab fallback's two streams ride one HTTP/2 connection", async () => {
  const { context, close } = await launchBrowser({ strip: ["SharedWorker", "locks"], args: [pin] });
  try {
    const { user, pages, streams } = await twoTabs(context, "tab");
    await bothShow(user, pages, "over https, per tab");
    const open = streams.map((s) => s.filter((r) => r.status === 200));
    assert.ok(open.every((s) => s.length >= 1), `each tab opened its stream: ${JSON.stringify(streams)}`);
    const all = open.flat();
    assert.deepEqual([...new Set(all.map((r) => r.protocol))], ["h2"], JSON.stringify(all));
    const connections = new Set(all.map((r) => r.connectionId));
    assert.equal(connections.size, 1, `one connection for both tabs' streams: ${JSON.stringify(all)}`);
  } finally {
    await close();
  }
});
