// A stream whose connection dies without a word (a NAT or a proxy drops it: no FIN, no RST)
// in headless Chromium: the client notices that the user's log moved on while it heard nothing
// (`checkEvery`), reconnects and gets what it missed, once. Herald sits behind a TCP proxy of
// the test's that can freeze the connections it holds while new ones still pass.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startHerald, token, publish, until, launchBrowser } from "./harness.mjs";

let herald;
let proxy;
before(async () => {
  herald = await startHerald(["--dev"]);
  proxy = await freezingProxy(new URL(herald.base).port);
});
after(async () => {
  proxy?.close();
  await herald?.stop();
});

/**
 * A TCP proxy on a free loopback port to `port`: `{ base, freeze(), close() }`. `freeze()`
 * stops moving bytes on every connection it holds, both ways, and closes none of them.
 */
function freezingProxy(port) {
  const held = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    held.add(pair);
    const pipe = (from, to) => from.on("data", (chunk) => pair.frozen || to.write(chunk));
    pipe(client, upstream);
    pipe(upstream, client);
    const end = () => {
      held.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        base: `http://127.0.0.1:${server.address().port}`,
        freeze: () => held.forEach((pair) => (pair.frozen = true)),
        close: () => {
          held.forEach((pair) => (pair.client.destroy(), pair.upstream.destroy()));
          server.close();
        },
      });
    });
  });
}

for (const [name, strip] of [["shared-worker", []], ["tab", ["SharedWorker", "locks"]]]) {
  test(`a stream whose connection died silently reconnects once the log moves on, and misses nothing (${name})`, async () => {
    const { context, close } = await launchBrowser({ strip });
    try {
      const page = await context.newPage();
      await page.goto(`${proxy.base}/healthz`);
      const user = `quiet-${name}`;
      await page.evaluate(async (bearer) => {
        const r = await fetch("/session", { method: "POST", headers: { authorization: `Bearer ${bearer}` } });
        if (r.status !== 204) throw new Error(`session: ${r.status}`);
        const { default: Herald } = await import("/herald.js");
        window.got = [];
        window.h = await Herald.connect({ checkEvery: 1_000 });
        window.h.on("notification", (n) => window.got.push(n.id));
      }, token("--sub", user, "--ttl", "1h", "--sid", "s1"));
      const got = () => page.evaluate(() => window.got);
      const first = await publish(herald.base, user, "before");
      await until(async () => (await got()).includes(first), "the first notification");
      proxy.freeze();
      const missed = [await publish(herald.base, user, "after 1"), await publish(herald.base, user, "after 2")];
      await until(async () => {
        const ids = await got();
        return missed.every((id) => ids.includes(id));
      }, "the missed notifications", 15_000);
      const ids = await got();
      for (const id of [first, ...missed]) assert.equal(ids.filter((x) => x === id).length, 1, `${id} once in ${ids}`);
      assert.equal(await page.evaluate(() => window.h.unreadCount), 3);
    } finally {
      await close();
    }
  });
}
