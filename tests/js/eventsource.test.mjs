// The stream works with a widely used third-party SSE client (npm `eventsource`), including
// its own automatic reconnect with Last-Event-ID after the connection drops.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { EventSource } from "eventsource";
import { startHerald, token, publish, until } from "./harness.mjs";

/** A TCP proxy whose open connections the test can cut, recording each request's head. */
function cuttableProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const heads = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.once("data", (chunk) => heads.push(chunk.toString("latin1")));
    client.pipe(upstream).pipe(client);
    const drop = () => { client.destroy(); upstream.destroy(); };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        base: `http://127.0.0.1:${server.address().port}`,
        heads,
        cut: () => { for (const s of sockets) s.destroy(); sockets.clear(); },
        close: () => new Promise((r) => server.close(r)),
      })));
}

test("eventsource receives events and resumes with Last-Event-ID after a drop", async () => {
  const herald = await startHerald();
  const proxy = await cuttableProxy(herald.base);
  const auth = `Bearer ${token("--sub", "alice", "--sid", "es")}`;
  const es = new EventSource(`${proxy.base}/events`, {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...init.headers, authorization: auth } }),
  });
  const seen = [];
  let ready = 0;
  es.addEventListener("ready", (e) => { ready += 1; assert.equal(JSON.parse(e.data).user, "alice"); });
  es.addEventListener("notification", (e) => seen.push({ id: JSON.parse(e.data).id, lastEventId: e.lastEventId }));
  try {
    await until(() => ready === 1, "ready", 10_000);
    const first = await publish(herald.base, "alice", "one");
    await until(() => seen.length === 1, "first notification", 10_000);
    assert.equal(seen[0].id, first);

    proxy.cut();
    const second = await publish(herald.base, "alice", "while away");
    const third = await publish(herald.base, "alice", "also while away");
    await until(() => seen.length >= 3, "replayed notifications", 15_000);
    assert.equal(ready, 2, "the client reconnected once");
    assert.deepEqual(seen.map((s) => s.id), [first, second, third], "each exactly once, in order");
    const reconnect = proxy.heads.at(-1).toLowerCase();
    assert.match(reconnect, new RegExp(`last-event-id: ${seen[0].lastEventId}\\r\\n`));

    const fourth = await publish(herald.base, "alice", "live again");
    await until(() => seen.length === 4, "live notification after resume", 10_000);
    assert.equal(seen[3].id, fourth);
  } finally {
    es.close();
    await proxy.close();
    herald.stop();
  }
});
