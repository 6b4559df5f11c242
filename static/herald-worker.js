// Herald SharedWorker: holds the one `/events` stream of this browser and fans every event out
// to all connected tabs. A tab that joins is brought up to date by `Stream.join`: `ready` with
// the current counts, or, if it is behind (it reloaded while events arrived), a resume from
// its position, which replays what it missed (the other tabs drop what they already have).
// A port gets events only from its hello on: an event broadcast before the resume would put
// the tab past what the replay brings.
import { MSG, Stream } from "./herald.js";

const ports = new Set();
let stream = null;

function broadcast(name, data, id) {
  for (const port of ports) port.postMessage({ type: MSG.EVENT, name, data, id });
}

function hello(port, { base, position }) {
  ports.add(port);
  if (!stream || stream.closed) {
    stream = new Stream({ base, lastEventId: position?.id, unread: position?.unread, unseen: position?.unseen, onEvent: broadcast });
    stream.start();
  } else {
    stream.join(position, (name, data, id) => port.postMessage({ type: MSG.EVENT, name, data, id }));
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
      }
    }
  };
  port.start();
};
