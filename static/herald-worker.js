// Herald SharedWorker: holds the one `/events` stream of this browser and fans every event out
// to all connected tabs. A tab that joins is brought up to date by `Stream.join`: `ready` with
// the current counts, or, if it is behind (it reloaded while events arrived), a resume from
// its position, which replays what it missed (the other tabs drop what they already have).
// A port gets events only from its hello on: an event broadcast before the resume would put
// the tab past what the replay brings. A stream the server ended with `replaced` starts again
// from where it was when a tab joins (`Stream.reopen`); one `revoked`, from the tab's position.
// Every `WORKER_ALIVE_MS` it tells its tabs it is alive: a tab that stops hearing from it
// (its process crashed with the tab that started it) connects again, to a new worker.
import { MSG, Stream, WORKER_ALIVE_MS } from "./herald.js";

const ports = new Set();
let stream = null;
let alive = null;

function broadcast(name, data, id) {
  for (const port of ports) port.postMessage({ type: MSG.EVENT, name, data, id });
}

function hello(port, { base, position, checkEvery }) {
  ports.add(port);
  // At once too: a tab arms its watchdog once it knows this worker says it.
  port.postMessage({ type: MSG.ALIVE });
  alive ??= setInterval(() => {
    for (const p of ports) p.postMessage({ type: MSG.ALIVE });
  }, WORKER_ALIVE_MS);
  const send = (name, data, id) => port.postMessage({ type: MSG.EVENT, name, data, id });
  if (stream?.endedBy === "replaced") {
    stream.reopen(position, send);
  } else if (!stream || stream.closed) {
    stream = new Stream({ base, lastEventId: position?.id, unread: position?.unread, unseen: position?.unseen, checkEvery, onEvent: broadcast });
    stream.start();
  } else {
    stream.join(position, send);
  }
}

self.onconnect = (e) => {
  const port = e.ports[0];
  port.onmessage = (m) => {
    if (m.data?.type === MSG.HELLO) hello(port, m.data);
    if (m.data?.type === MSG.BYE) {
      ports.delete(port);
      if (ports.size === 0) {
        stream?.close();
        stream = null;
        clearInterval(alive);
        alive = null;
      }
    }
  };
  port.start();
};
