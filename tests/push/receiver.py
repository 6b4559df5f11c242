#!/usr/bin/env python3
"""A test push service: receives Web Push messages the way a browser vendor's push service
does, and checks them with code that is not Herald's.

- RFC 8030 delivery: `POST /push/<name>` over HTTPS on 127.0.0.1 (a free port), with a
  certificate made at start; `--cert-out FILE` gets the CA certificate (PEM) that signed it,
  for Herald's `--push-ca-file`.
- RFC 8292 VAPID: `Authorization: vapid t=<JWT>, k=<public key>`, the ES256 signature checked
  against k with `cryptography`; `aud` must be this service's origin, `exp` in the future and
  at most 24 h ahead, `sub` a `mailto:` or `https:` URI; k must be the expected key if one was
  set (`/expect-key`).
- RFC 8291 payloads: `Content-Encoding: aes128gcm`, one record, decrypted with the
  subscription's private key and auth secret by `http_ece` (PyPI, a well-known ECE
  implementation), then parsed as JSON.

When ready it prints one line on stdout, `{"port": N, "control": "http://127.0.0.1:M"}`.
The control server (plain HTTP, JSON) on M:

- `POST /subscriptions {"name": "a"}` → the browser-style PushSubscription
  `{"endpoint": "https://127.0.0.1:N/push/a", "keys": {"p256dh": …, "auth": …}}`; the same
  one again for a name that has one. Optional `"private_key"` (base64url P-256 scalar) and
  `"auth"` (base64url) import known keys (for test vectors).
- `POST /respond {"name": "a", "statuses": [429, 201], "retry_after": "1", "delay": 2.5}`: the
  answers to the next valid pushes to `a`, in order (`Retry-After` on those that are not 2xx);
  then 201. With `delay` (seconds), each of those answers (and the 201s after them) comes that
  much later, as from a slow push service.
- `POST /expect-key {"public_key": "<base64url>"}` (`null`: any key).
- `GET /messages`, `GET /messages?name=a` → `{"messages": [...]}`, every push received, in
  order, rejected ones included: `{"name", "payload" (JSON or null), "plaintext", "ttl",
  "urgency", "topic", "vapid_ok", "error" (null or why it was rejected), "status" (the answer),
  "sub", "public_key" (k), "received_at", "answered_at" (Unix seconds; null until answered)}`.
- `POST /reset`: forget the messages.

A push that breaks a rule gets the answer a real push service gives (400, 401, 403, 404, 413,
415) and is recorded with `error` set; only valid pushes take an answer from the queue.
SIGTERM or SIGINT: a clean exit (0). With `--exit-on-stdin-eof` it also exits when stdin
closes (its parent died). `--verbose` (or HERALD_TEST_LOG set) logs each push on stderr.
"""

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BODY = 4096  # RFC 8030 §7.2: a push service must accept at least 4096 octets; most take no more
MAX_EXP_AHEAD = 24 * 3600  # RFC 8292 §2: exp at most 24 h after the request
URGENCIES = ("very-low", "low", "normal", "high")  # RFC 8030 §5.3
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # RFC 8030 §5.4: at most 32 base64url characters


def b64u_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_point(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class Rejected(Exception):
    """A push that breaks a rule: the status to answer and why."""

    def __init__(self, status, why):
        super().__init__(why)
        self.status = status
        self.why = why


# -- TLS ----------------------------------------------------------------------------------


def make_certificates():
    """A CA (written out for Herald to trust) and a server certificate it signs for
    127.0.0.1 and localhost. Two certificates, not one self-signed server certificate: some
    verifiers (webpki, under rustls) refuse a CA certificate as a server's own, and others
    refuse a trust anchor that is not a CA."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=7)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test push CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca, cert, key


def server_tls_context(ca, cert, key):
    """An ssl context serving `cert` (and the CA after it). `load_cert_chain` only reads
    files, so they exist just for that call."""
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory(prefix="herald-push-tls-") as tmp:
        chain, keyfile = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        with open(chain, "wb") as f:
            f.write(pem(cert) + pem(ca))
        with open(keyfile, "wb") as f:
            os.chmod(keyfile, 0o600)
            f.write(key_pem)
        context.load_cert_chain(chain, keyfile)
    return context


# -- state --------------------------------------------------------------------------------


class State:
    def __init__(self, verbose):
        self.lock = threading.Lock()
        self.subscriptions = {}  # name -> {"private_key", "auth"}
        self.queues = {}  # name -> [(status, retry_after or None)]
        self.delays = {}  # name -> seconds each valid push to it waits before its answer
        self.expected_key = None  # uncompressed point bytes, or None
        self.messages = []
        self.origin = None  # https://127.0.0.1:<port>, once bound
        self.verbose = verbose
        self.counter = 0

    def log(self, text):
        if self.verbose:
            print(f"push receiver: {text}", file=sys.stderr, flush=True)


# -- checks -------------------------------------------------------------------------------


def parse_vapid(header):
    """`vapid t=<jwt>, k=<key>` (RFC 8292 §3) → (jwt, k)."""
    if header is None:
        raise Rejected(401, "no Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise Rejected(401, f"Authorization scheme is {scheme!r}, not vapid")
    params = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise Rejected(403, f"malformed vapid parameter {part.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    if "t" not in params or "k" not in params:
        raise Rejected(403, "vapid Authorization needs both t= and k=")
    return params["t"], params["k"]


def check_vapid(jwt, k, origin, expected_key):
    """Verify the JWT against k; returns (claims, k as bytes). Raises Rejected."""
    try:
        key_bytes = b64u_decode(k)
        if len(key_bytes) != 65 or key_bytes[0] != 4:
            raise ValueError("not an uncompressed point")
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
    except ValueError as e:
        raise Rejected(403, f"k is not a base64url uncompressed P-256 point: {e}")
    parts = jwt.split(".")
    if len(parts) != 3:
        raise Rejected(403, "t is not a JWS compact serialization (three parts)")
    try:
        header = json.loads(b64u_decode(parts[0]))
        claims = json.loads(b64u_decode(parts[1]))
        signature = b64u_decode(parts[2])
    except ValueError as e:
        raise Rejected(403, f"JWT does not decode: {e}")
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise Rejected(403, f"JWT alg is {header.get('alg') if isinstance(header, dict) else header!r}, not ES256")
    if len(signature) != 64:
        raise Rejected(403, f"JWT signature is {len(signature)} bytes, not 64 (JOSE r||s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected(403, "JWT signature does not verify with k")
    if not isinstance(claims, dict):
        raise Rejected(403, "JWT claims are not an object")
    if claims.get("aud") != origin:
        raise Rejected(403, f"JWT aud is {claims.get('aud')!r}, not {origin!r}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Rejected(403, f"JWT exp is {exp!r}, not an integer")
    if exp <= now:
        raise Rejected(403, f"JWT expired ({exp} <= {int(now)})")
    if exp > now + MAX_EXP_AHEAD + 1:  # 1 s for rounding
        raise Rejected(403, f"JWT exp is {exp - int(now)} s ahead, more than 24 h")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not (sub.startswith("mailto:") or sub.startswith("https:")):
        raise Rejected(403, f"JWT sub is {sub!r}, not a mailto: or https: URI")
    if expected_key is not None and key_bytes != expected_key:
        raise Rejected(403, "k is not the expected application server key")
    return claims, key_bytes


def decrypt(body, subscription):
    """RFC 8291: one aes128gcm record whose keyid is the sender's public point; decrypted by
    http_ece. Raises Rejected."""
    if len(body) < 21:
        raise Rejected(400, "body shorter than an aes128gcm header")
    rs = int.from_bytes(body[16:20], "big")
    idlen = body[20]
    if idlen != 65:
        raise Rejected(400, f"aes128gcm keyid is {idlen} bytes, not a 65-byte P-256 point (RFC 8291 §4)")
    records = body[21 + idlen:]
    if len(records) >= rs:
        raise Rejected(400, f"more than one record ({len(records)} bytes with rs {rs}; RFC 8291 §4)")
    try:
        return http_ece.decrypt(
            body,
            private_key=subscription["private_key"],
            auth_secret=subscription["auth"],
            version="aes128gcm",
        )
    except Exception as e:  # http_ece.ECEException, or a bad point in keyid
        raise Rejected(400, f"decryption failed: {e}")


# -- the push service ---------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, for clients that reuse connections
    timeout = 30
    server_version = "herald-test-push/1"

    def log_message(self, fmt, *args):
        pass

    def read_body(self, limit):
        """The request body (Content-Length or chunked); None if over `limit`."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data if len(data) <= limit else None
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True  # the body stays unread
            return None
        return self.rfile.read(length)

    def answer(self, status, headers=(), body=b""):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class PushHandler(Handler):
    def setup(self):
        super().setup()  # sets the socket timeout first
        self.request.do_handshake()

    def do_POST(self):
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/push/") or len(path) == len("/push/"):
            self.read_body(1 << 20)
            return self.answer(404, body=b"not a push endpoint\n")
        name = urllib.parse.unquote(path[len("/push/"):])
        record = {
            "name": name,
            "payload": None,
            "plaintext": None,
            "ttl": None,
            "urgency": self.headers.get("Urgency"),
            "topic": self.headers.get("Topic"),
            "vapid_ok": False,
            "error": None,
            "status": None,
            "sub": None,
            "public_key": None,
            "received_at": time.time(),
            "answered_at": None,
        }
        headers = []
        recorded = False
        try:
            body = self.read_body(MAX_BODY)
            if body is None:
                raise Rejected(413, f"body larger than {MAX_BODY} bytes")
            with state.lock:
                subscription = state.subscriptions.get(name)
                expected_key = state.expected_key
            try:
                jwt, k = parse_vapid(self.headers.get("Authorization"))
                record["public_key"] = k
                # The origin the client reached: its endpoint named 127.0.0.1 or localhost.
                port = state.origin.rsplit(":", 1)[1]
                origin = state.origin
                if self.headers.get("Host") == f"localhost:{port}":
                    origin = f"https://localhost:{port}"
                claims, _ = check_vapid(jwt, k, origin, expected_key)
                record["sub"] = claims.get("sub")
                record["vapid_ok"] = True
            except Rejected as e:
                vapid_error = e
            else:
                vapid_error = None
            ttl = self.headers.get("TTL")
            if ttl is None or not re.fullmatch(r"[0-9]+", ttl.strip()):
                raise Rejected(400, f"TTL header is {ttl!r}, not a non-negative integer")
            record["ttl"] = int(ttl.strip())
            urgency = record["urgency"]
            if urgency is not None and urgency not in URGENCIES:
                raise Rejected(400, f"Urgency {urgency!r} is not one of {', '.join(URGENCIES)}")
            topic = record["topic"]
            if topic is not None and not TOPIC.match(topic):
                raise Rejected(400, f"Topic {topic!r} is not 1 to 32 base64url characters")
            if vapid_error is not None:
                raise vapid_error
            if subscription is None:
                raise Rejected(404, f"no subscription named {name!r}")
            encoding = self.headers.get("Content-Encoding")
            if encoding != "aes128gcm":
                raise Rejected(415, f"Content-Encoding is {encoding!r}, not aes128gcm")
            plaintext = decrypt(body, subscription)
            try:
                record["plaintext"] = plaintext.decode("utf-8")
                record["payload"] = json.loads(record["plaintext"])
            except ValueError as e:
                raise Rejected(400, f"payload is not UTF-8 JSON: {e}")
            with state.lock:
                queue = state.queues.get(name) or []
                status, retry_after = queue.pop(0) if queue else (201, None)
                state.counter += 1
                message_id = state.counter
                delay = state.delays.get(name, 0)
                # recorded at once, answered after the delay (a slow push service)
                state.messages.append(record)
                recorded = True
            time.sleep(delay)
            if 200 <= status < 300:
                headers = [
                    ("Location", f"{state.origin}/message/{message_id}"),
                    ("TTL", str(record["ttl"])),
                ]
            elif retry_after is not None:
                headers = [("Retry-After", retry_after)]
        except Rejected as e:
            status, record["error"] = e.status, e.why
        except Exception as e:  # a malformed request: still recorded
            status, record["error"] = 400, f"bad request: {e!r}"
            self.close_connection = True
        with state.lock:
            record["status"] = status
            if not recorded:
                state.messages.append(record)
        state.log(f"POST /push/{name} -> {status}" + (f" ({record['error']})" if record["error"] else ""))
        self.answer(status, headers, b"" if status < 300 else (record["error"] or "").encode() + b"\n")
        with state.lock:
            record["answered_at"] = time.time()

    def do_GET(self):
        self.answer(405, [("Allow", "POST")])

    do_PUT = do_DELETE = do_GET


# -- the control server -------------------------------------------------------------------


class ControlHandler(Handler):
    def reply(self, status, value):
        self.answer(status, [("Content-Type", "application/json")], json.dumps(value).encode() + b"\n")

    def do_GET(self):
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/messages":
            return self.reply(404, {"error": "not found"})
        name = urllib.parse.parse_qs(url.query).get("name", [None])[0]
        with state.lock:
            messages = [m for m in state.messages if name is None or m["name"] == name]
        self.reply(200, {"messages": messages})

    def do_POST(self):
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        try:
            raw = self.read_body(1 << 20) or b""
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/subscriptions":
                return self.reply(200, self.subscribe(state, body))
            if path == "/respond":
                name, statuses = body.get("name"), body.get("statuses")
                if not isinstance(name, str) or not isinstance(statuses, list):
                    raise ValueError("needs name (string) and statuses (list)")
                if not all(isinstance(s, int) and 100 <= s <= 599 for s in statuses):
                    raise ValueError("statuses must be HTTP status codes")
                retry_after = body.get("retry_after")
                if retry_after is not None:
                    retry_after = str(retry_after)
                delay = body.get("delay", 0)
                if not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
                    raise ValueError("delay must be 0 to 60 seconds")
                with state.lock:
                    state.queues[name] = [(s, retry_after) for s in statuses]
                    state.delays[name] = delay
                return self.reply(200, {"ok": True})
            if path == "/expect-key":
                key = body.get("public_key")
                point = None
                if key is not None:
                    point = b64u_decode(key)
                    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
                with state.lock:
                    state.expected_key = point
                return self.reply(200, {"ok": True})
            if path == "/reset":
                with state.lock:
                    state.messages.clear()
                return self.reply(200, {"ok": True})
            return self.reply(404, {"error": "not found"})
        except ValueError as e:
            return self.reply(400, {"error": str(e)})

    @staticmethod
    def subscribe(state, body):
        name = body.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._~-]+", name):
            raise ValueError("name must be a non-empty string of URL-safe characters")
        with state.lock:
            subscription = state.subscriptions.get(name)
            if subscription is None:
                if body.get("private_key") is not None:
                    scalar = int.from_bytes(b64u_decode(body["private_key"]), "big")
                    private_key = ec.derive_private_key(scalar, ec.SECP256R1())
                else:
                    private_key = ec.generate_private_key(ec.SECP256R1())
                auth = b64u_decode(body["auth"]) if body.get("auth") is not None else os.urandom(16)
                if len(auth) != 16:
                    raise ValueError("auth must be 16 bytes")
                subscription = {"private_key": private_key, "auth": auth}
                state.subscriptions[name] = subscription
        return {
            "endpoint": f"{state.origin}/push/{name}",
            "expirationTime": None,
            "keys": {
                "p256dh": b64u_encode(public_point(subscription["private_key"])),
                "auth": b64u_encode(subscription["auth"]),
            },
        }


# -- main ---------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # port 0: always a fresh port
    request_queue_size = 1024  # a burst of pushes connects at once

    def __init__(self, handler, state, tls=None):
        super().__init__(("127.0.0.1", 0), handler)
        self.state = state
        self.tls = tls

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            # the handshake happens in the request's thread, on its first read
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # a client that hangs up or fails the handshake is not our problem


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert-out", required=True, help="where to write the CA certificate (PEM)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    state = State(args.verbose or bool(os.environ.get("HERALD_TEST_LOG")))
    ca, cert, key = make_certificates()
    with open(args.cert_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    push = Server(PushHandler, state, tls=server_tls_context(ca, cert, key))
    control = Server(ControlHandler, state)
    port = push.server_address[1]
    state.origin = f"https://127.0.0.1:{port}"

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True) for s in (push, control)]
    for t in threads:
        t.start()
    if args.exit_on_stdin_eof:
        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    print(json.dumps({"port": port, "control": f"http://127.0.0.1:{control.server_address[1]}"}), flush=True)
    while not stop.wait(0.1):
        pass
    for s in (push, control):
        s.shutdown()
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
