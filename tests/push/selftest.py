#!/usr/bin/env python3
"""Self-test of receiver.py: starts it, then acts as an application server by a path of its
own (a VAPID key from `cryptography`, an ES256 JWT signed here, the payload encrypted with
`http_ece.encrypt`, HTTPS that trusts only the written CA certificate) and checks what the
receiver recorded and answered; also the RFC 8291 Appendix A message, and rejections.

    python3 tests/push/selftest.py        # prints "selftest: ok (N checks)", exit 0
"""

import base64
import http.client
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
checks = 0


def check(condition, what, detail=None):
    global checks
    checks += 1
    if not condition:
        print(f"selftest: FAILED: {what}" + (f"\n  {detail}" if detail is not None else ""), file=sys.stderr)
        sys.exit(1)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def vapid_jwt(key, claims):
    """ES256 JWS, compact form, signature as JOSE r||s."""
    header = b64u(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    payload = b64u(json.dumps(claims).encode())
    der = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{header}.{payload}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def encrypt(subscription, payload):
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    return http_ece.encrypt(
        json.dumps(payload).encode(),
        private_key=ephemeral,
        dh=unb64u(subscription["keys"]["p256dh"]),
        auth_secret=unb64u(subscription["keys"]["auth"]),
        version="aes128gcm",
    )


class Receiver:
    def __init__(self, cert_out):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "receiver.py"), "--cert-out", cert_out],
            stdout=subprocess.PIPE,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        check(ready, "the receiver printed its ready line within 15 s")
        line = self.proc.stdout.readline()
        info = json.loads(line)
        check(set(info) == {"port", "control"}, "the ready line is {port, control}", line)
        self.port, self.control = info["port"], info["control"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.control + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def messages(self, name=None):
        return self.call("GET", "/messages" + (f"?name={name}" if name else ""))["messages"]


def main():
    tmp = tempfile.mkdtemp(prefix="herald-push-selftest-")
    cert = os.path.join(tmp, "push-ca.pem")
    rx = Receiver(cert)
    try:
        run(rx, cert)
    finally:
        if rx.proc.poll() is None:
            rx.proc.kill()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    print(f"selftest: ok ({checks} checks)")


def run(rx, cert):
    origin = f"https://127.0.0.1:{rx.port}"
    check(open(cert).read().startswith("-----BEGIN CERTIFICATE-----"), "--cert-out is a PEM certificate")

    # TLS: only the written CA is trusted, the host name (an IP) is checked, strict X.509
    tls = ssl.create_default_context(cafile=cert)
    tls.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    conn = http.client.HTTPSConnection("127.0.0.1", rx.port, context=tls, timeout=10)
    untrusting = http.client.HTTPSConnection("127.0.0.1", rx.port, context=ssl.create_default_context(), timeout=10)
    try:
        untrusting.request("POST", "/push/x", body=b"")
        untrusting.getresponse()
        check(False, "a client that does not trust the CA is refused")
    except ssl.SSLCertVerificationError:
        check(True, "a client that does not trust the CA is refused")
    curl = subprocess.run(
        ["curl", "-sS", "--cacert", cert, "-o", "/dev/null", "-w", "%{http_code}", f"https://localhost:{rx.port}/push/x"],
        capture_output=True, text=True,
    )
    check(curl.stdout == "405", "curl trusts the CA for https://localhost (GET /push/x is 405)", curl.stderr + curl.stdout)

    vapid = ec.generate_private_key(ec.SECP256R1())
    k = b64u(point(vapid))
    exp = int(time.time()) + 12 * 3600
    good_jwt = vapid_jwt(vapid, {"aud": origin, "exp": exp, "sub": "mailto:ops@example.com"})

    def push(name, subscription, payload, jwt=good_jwt, key=k, headers=None, body=None):
        h = {
            "TTL": "60",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": f"vapid t={jwt}, k={key}",
        }
        h.update(headers or {})
        h = {n: v for n, v in h.items() if v is not None}
        conn.request("POST", f"/push/{name}", body=encrypt(subscription, payload) if body is None else body, headers=h)
        r = conn.getresponse()
        r.read()
        return r

    # 1. a valid push: 201, decrypted, VAPID verified (one connection reused throughout)
    sub_a = rx.call("POST", "/subscriptions", {"name": "a"})
    check(sub_a["endpoint"] == f"{origin}/push/a", "the endpoint names the receiver's origin", sub_a)
    check(len(unb64u(sub_a["keys"]["p256dh"])) == 65 and len(unb64u(sub_a["keys"]["auth"])) == 16, "p256dh is a point, auth 16 bytes", sub_a)
    check(rx.call("POST", "/subscriptions", {"name": "a"}) == sub_a, "subscribing a name again gives the same subscription")
    payload = {"id": "01HZ", "title": "Deploy finished", "body": "é ✓", "link": "/d/1", "category": "ops", "unread_count": 3}
    r = push("a", sub_a, payload, headers={"Urgency": "high", "Topic": "01HZ"})
    check(r.status == 201, "a valid push is answered 201", (r.status, rx.messages()))
    check((r.getheader("Location") or "").startswith(f"{origin}/message/"), "201 carries a Location", r.getheaders())
    [m] = rx.messages("a")
    expected = {
        "name": "a", "payload": payload, "ttl": 60, "urgency": "high", "topic": "01HZ",
        "vapid_ok": True, "error": None, "status": 201, "sub": "mailto:ops@example.com", "public_key": k,
    }
    check({f: m[f] for f in expected} == expected, "the message is recorded decrypted, VAPID ok", m)
    check(json.loads(m["plaintext"]) == payload, "plaintext is the JSON text")
    r = push("a", sub_a, payload)
    check(r.status == 201, "a second push on the same connection")
    conn.request("POST", "/push/a", body=iter([encrypt(sub_a, {"chunked": True})]), encode_chunked=True,
                 headers={"TTL": "5", "Content-Encoding": "aes128gcm", "Authorization": f"vapid t={good_jwt}, k={k}"})
    r = conn.getresponse()
    r.read()
    m = rx.messages("a")[-1]
    check(r.status == 201 and m["payload"] == {"chunked": True}, "a chunked body is read too", m)
    r = push("a", sub_a, payload)
    m = rx.messages("a")[-1]
    check(m["urgency"] is None and m["topic"] is None, "absent Urgency and Topic are null", m)

    # 2. a queue of answers: 429 (with Retry-After), then 201, then the default 201
    sub_b = rx.call("POST", "/subscriptions", {"name": "b"})
    rx.call("POST", "/respond", {"name": "b", "statuses": [429, 201], "retry_after": "1"})
    r1, r2, r3 = (push("b", sub_b, {"n": i}) for i in range(3))
    check((r1.status, r1.getheader("Retry-After")) == (429, "1"), "the first push to b is 429, Retry-After: 1", r1.getheaders())
    check((r2.status, r2.getheader("Retry-After")) == (201, None), "the second is 201 without Retry-After")
    check(r3.status == 201, "after the queue: 201")
    mb = rx.messages("b")
    check([(x["status"], x["payload"], x["vapid_ok"]) for x in mb] == [(429, {"n": 0}, True), (201, {"n": 1}, True), (201, {"n": 2}, True)], "b's messages in order, with the answers", mb)

    # 3. 410 Gone (and 404)
    sub_c = rx.call("POST", "/subscriptions", {"name": "c"})
    rx.call("POST", "/respond", {"name": "c", "statuses": [410, 404]})
    check([push("c", sub_c, {}).status for _ in range(3)] == [410, 404, 201], "c answers 410, 404, then 201")
    check([x["status"] for x in rx.messages("c")] == [410, 404, 201], "c's messages record those answers")

    # 4. the expected key
    rx.call("POST", "/expect-key", {"public_key": k})
    check(push("a", sub_a, {"x": 1}).status == 201, "the expected key is accepted")
    other = ec.generate_private_key(ec.SECP256R1())
    other_jwt = vapid_jwt(other, {"aud": origin, "exp": exp, "sub": "mailto:x@example.com"})
    r = push("a", sub_a, {"x": 2}, jwt=other_jwt, key=b64u(point(other)))
    m = rx.messages("a")[-1]
    check(r.status == 403 and not m["vapid_ok"] and "expected" in m["error"], "another (validly signed) key is refused", m)
    rx.call("POST", "/expect-key", {"public_key": None})
    check(push("a", sub_a, {"x": 3}, jwt=other_jwt, key=b64u(point(other))).status == 201, "any key once the expectation is cleared")

    # 5. rejections, each recorded with its error
    def rejected(status, words, **kw):
        before = len(rx.messages())
        r = push(kw.pop("name", "a"), sub_a, {"r": 1}, **kw)
        ms = rx.messages()
        m = ms[-1]
        check(r.status == status and len(ms) == before + 1 and words in (m["error"] or ""),
              f"{words!r} is refused with {status} and recorded", (r.status, m))
        return m

    m = rejected(403, "aud", jwt=vapid_jwt(vapid, {"aud": "https://127.0.0.1:1", "exp": exp, "sub": "mailto:a@b"}))
    check(m["vapid_ok"] is False, "vapid_ok is false for a wrong aud")
    rejected(403, "does not verify", jwt=other_jwt)  # signed by another key than k
    rejected(403, "24 h", jwt=vapid_jwt(vapid, {"aud": origin, "exp": int(time.time()) + 25 * 3600, "sub": "mailto:a@b"}))
    rejected(403, "expired", jwt=vapid_jwt(vapid, {"aud": origin, "exp": int(time.time()) - 1, "sub": "mailto:a@b"}))
    rejected(403, "sub", jwt=vapid_jwt(vapid, {"aud": origin, "exp": exp}))
    rejected(401, "no Authorization", headers={"Authorization": None})
    rejected(401, "scheme", headers={"Authorization": f"WebPush {good_jwt}"})
    rejected(400, "TTL", headers={"TTL": None})
    rejected(400, "Urgency", headers={"Urgency": "urgent"})
    rejected(415, "Content-Encoding", headers={"Content-Encoding": "aesgcm"})
    rejected(404, "no subscription", name="nobody")
    tampered = bytearray(encrypt(sub_a, {"r": 1}))
    tampered[-1] ^= 1
    m = rejected(400, "decryption failed", body=bytes(tampered))
    check(m["vapid_ok"] is True and m["payload"] is None, "a body that does not decrypt: vapid_ok, no payload", m)
    wrong_keys = {"keys": {"p256dh": b64u(point(other)), "auth": sub_a["keys"]["auth"]}}
    rejected(400, "decryption failed", body=encrypt(wrong_keys, {"r": 1}))
    conn.close()  # 413 closes the connection (its body is left unread)
    rejected(413, "larger", body=b"\0" * 5000)
    conn.close()

    # 6. RFC 8291 Appendix A: the RFC's own message decrypts with its user agent keys
    rfc = rx.call("POST", "/subscriptions", {"name": "rfc8291", "private_key": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "auth": "BTBZMqHH6r4Tts7J_aSIgg"})
    check(rfc["keys"]["p256dh"] == "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "the imported key is the RFC's ua_public")
    body = unb64u("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    push("rfc8291", rfc, None, body=body)
    m = rx.messages("rfc8291")[-1]
    check(m["plaintext"] == "When I grow up, I want to be a watermelon" and m["vapid_ok"], "the RFC 8291 example decrypts", m)
    check(m["status"] == 400 and "not UTF-8 JSON" in m["error"], "its plaintext is not JSON: 400", m)

    # 7. filter, reset, control errors
    names = [x["name"] for x in rx.messages()]
    check(names[:5] == ["a", "a", "a", "a", "b"] and "nobody" in names and names[-1] == "rfc8291", "GET /messages lists every push in order", names)
    check(all(x["name"] == "b" for x in rx.messages("b")), "?name= filters")
    rx.call("POST", "/reset")
    check(rx.messages() == [], "POST /reset clears the messages")
    try:
        rx.call("POST", "/respond", {"name": "a", "statuses": ["x"]})
        check(False, "a bad /respond is a 400")
    except urllib.error.HTTPError as e:
        check(e.code == 400, "a bad /respond is a 400")

    # 8. SIGTERM: a clean exit
    rx.proc.send_signal(signal.SIGTERM)
    try:
        code = rx.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        code = None
    check(code == 0, "SIGTERM: exit 0 within 5 s", code)


if __name__ == "__main__":
    main()
