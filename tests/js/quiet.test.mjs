// A stream whose connection dies without a word (a NAT or a proxy drops it: no FIN, no RST)
// in headless Chromium: the client notices that the user's log moved on while it heard nothing
// (`checkEvery`), reconnects and gets what it missed, once; a healthy quiet stream does not
// reconnect. Herald sits behind a TCP proxy of the test's that can freeze the connections it
// holds while new ones still pass, and counts the `/events` requests through it.
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
 * A TCP proxy on a free loopback port to `port`: `{ base, freeze(), streams(), close() }`.
 * `freeze()` stops moving bytes on every connection it holds, both ways, and closes none of
 * them; `streams()` is how many `GET /events` requests went through.
 */
function freezingProxy(port) {
  const held = new Set();
  let streams = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    held.add(pair);
    client.on("data", (chunk) => {
      streams += chunk.toString("latin1").match(/^GET \/events/gm)?.length ?? 0;
    });
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
        streams: () => streams,
        close: () => {
          held.forEach((pair) => (pair.client.destroy(), pair.upstream.destroy()));
          server.close();
        },
      });
    });
  });
}

for (const [name, strip] of [["shared-worker", []], ["leader", ["SharedWorker"]], ["tab", ["SharedWorker", "locks"]]]) {
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
      // quiet and healthy: checked (the log did not move on without it), never reconnected
      const opened = proxy.streams();
      assert.ok(opened >= 1, "the stream went through the proxy");
      await new Promise((resolve) => setTimeout(resolve, 3_500));
      assert.equal(proxy.streams(), opened, "a healthy quiet stream reconnected");
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
