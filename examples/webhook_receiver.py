"""Example receiver for the hub's webhooks: verifies the signature, drops duplicates, prints each event.

    python examples/webhook_receiver.py --secret whsec_...
    HUB_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

Standard library only, so you can copy it anywhere. The hub treats any 2xx as delivered and retries
everything else (4xx, 5xx, timeouts) for more than a day, so answer fast and only fail when you want
the event again.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
import traceback
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # far above any event; caps what an unauthenticated caller can make us buffer
SEEN_KEYS = 100_000  # dedup memory; use a durable store kept longer than the hub's retry window in production


def verify_signature(header: str, body: bytes, secret: str, now: float, tolerance: int) -> str | None:
    """None if `Hub-Signature: t=<unix s>,v1=<hex>[,v1=...]` signs `body` with `secret`, else why not."""
    if not header:
        return "missing Hub-Signature header"
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    sigs = [v for k, v in parts if k == "v1"]
    t = stamps[0] if len(stamps) == 1 else ""
    # ASCII digits, and short: int() raises beyond 4300 digits, where a 401 is the right answer.
    if not (t.isascii() and t.isdigit() and len(t) <= 15) or not sigs:
        return "malformed Hub-Signature header"
    # The timestamp is signed too, so a captured request cannot be replayed after the tolerance.
    if abs(now - int(t)) > tolerance:
        return "timestamp outside tolerance"
    signed = f"{int(t)}.".encode() + body  # "<t>." + the raw bytes, exactly as the hub signed them
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    # Several v1 values while the hub rotates the secret: any match will do. Constant-time compare (on
    # bytes, since compare_digest refuses non-ASCII str) so timing leaks nothing about the signature.
    if any(hmac.compare_digest(expected, v.encode("utf-8", "replace")) for v in sigs):
        return None
    return "signature mismatch"


def print_event(event: dict) -> None:
    print(f"{event.get('type')} event={event.get('event_id')} customer={event.get('customer_id')}", flush=True)


def make_server(host: str, port: int, secret: str, tolerance: int, on_event=None) -> ThreadingHTTPServer:
    on_event = on_event or print_event
    seen: OrderedDict[str, None] = OrderedDict()  # insertion order = age, for eviction
    lock = threading.Lock()  # handlers run in threads; a retry can race the original delivery

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that stalls mid-body must not hold a thread forever

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                return self._reply(411, "Content-Length required")
            if (length := int(length)) > MAX_BODY:
                return self._reply(413, "body too large")
            body = self.rfile.read(length)  # the raw bytes: re-serialised JSON would not match the signature
            if len(body) != length:
                return self._reply(400, "incomplete body")
            reason = verify_signature(self.headers.get("Hub-Signature", ""), body, secret, time.time(), tolerance)
            if reason:
                return self._reply(401, reason)
            try:
                event = json.loads(body)
            except ValueError:
                return self._reply(400, "body is not JSON")
            if not isinstance(event, dict):
                return self._reply(400, "body is not a JSON object")

            # Deduplicate only after verifying, so forged requests cannot fill or probe the key set. The key
            # is the signed event_id (equal to the Idempotency-Key header, which the signature does not
            # cover: a captured request resent with another header must still count as a duplicate).
            # Claim the key before processing, so a concurrent retry of the same event is not processed twice.
            key = str(event.get("event_id") or self.headers.get("Idempotency-Key") or "")
            if key:
                with lock:
                    if key in seen:
                        return self._reply(200, "duplicate")
                    seen[key] = None
                    if len(seen) > SEEN_KEYS:
                        seen.popitem(last=False)
            try:
                # Keep this quick (hand slow work to a queue): a timeout counts as a failure and is retried.
                on_event(event)
            except Exception:
                if key:
                    with lock:
                        seen.pop(key, None)  # not processed: let the hub's retry through
                traceback.print_exc()
                return self._reply(500, "processing failed")
            self._reply(204)

        def _reply(self, code: int, text: str = "") -> None:
            data = text.encode()
            self.send_response(code)
            if code != 204:  # 204 carries no body
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    # Prefer the environment: a --secret argument is visible to other users in `ps`.
    parser.add_argument("--secret", default=os.environ.get("HUB_WEBHOOK_SECRET"),
                        help="the subscription's whsec_... secret (default: $HUB_WEBHOOK_SECRET)")
    parser.add_argument("--tolerance", type=int, default=300, help="max clock skew / replay age, seconds")
    args = parser.parse_args()
    if not args.secret:
        parser.error("no secret: pass --secret or set HUB_WEBHOOK_SECRET")
    server = make_server(args.host, args.port, args.secret, args.tolerance)
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
