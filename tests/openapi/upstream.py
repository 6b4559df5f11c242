"""A small upstream for tests/openapi/run: answers every request (any method, any path) with
200 and a JSON echo of the method, the path and Herald's identity header, so the /api/ proxy
and notification actions have a real backend behind them. Prints its port, then serves until
killed."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _read_body(self):
        # Herald streams bodies through: a length, or chunks.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self):
        self._read_body()
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "user": self.headers.get("X-Herald-User"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name):
        # `do_<METHOD>` for every method (Herald forwards any: TRACE, QUERY, …).
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
