"""The example webhook receiver integrators copy: it accepts what the hub signs, rejects what it did not
sign (or signed too long ago), and processes each event once however often the hub delivers it."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from services.identity.webhooks import signing

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
_spec = importlib.util.spec_from_file_location("webhook_receiver_example", SCRIPT)
receiver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(receiver)  # examples/ is not a package: load the script as users run it

SECRET = signing.new_secret()
OLD_SECRET = signing.new_secret()


class Receiver:
    def __init__(self, url: str):
        self.url = url
        self.events: list[dict] = []
        self.client = httpx.Client(trust_env=False, timeout=5)  # no proxy between us and 127.0.0.1

    def post(self, body: bytes, signature: str | None, key: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key or str(uuid.uuid4())}
        if signature is not None:
            headers["Hub-Signature"] = signature
        return self.client.post(self.url, content=body, headers=headers)


@pytest.fixture
def hub_receiver(request):
    events: list[dict] = []
    server = receiver.make_server("127.0.0.1", 0, SECRET, 300, on_event=events.append)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    r = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/hub")
    r.events = events

    def stop():
        r.client.close()
        server.shutdown()
        server.server_close()
        thread.join(5)

    request.addfinalizer(stop)
    return r


def _event(**extra) -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "type": "customer.lifecycle_changed",
                       "customer_id": str(uuid.uuid4()), **extra}).encode()


def _now() -> int:
    return int(time.time())


def test_a_signed_event_is_accepted_and_processed(hub_receiver):
    body = _event(stage="loyal")
    response = hub_receiver.post(body, signing.signature_header([SECRET], _now(), body))
    assert response.is_success
    assert hub_receiver.events == [json.loads(body)]


def test_during_a_secret_rotation_any_matching_signature_is_accepted(hub_receiver):
    body = _event()
    response = hub_receiver.post(body, signing.signature_header([OLD_SECRET, SECRET], _now(), body))
    assert response.is_success
    assert len(hub_receiver.events) == 1


@pytest.mark.parametrize("case", ["tampered body", "wrong secret", "ten minutes old", "missing header"])
def test_requests_the_hub_did_not_sign_now_are_rejected_with_401(hub_receiver, case):
    body = _event()
    signed_at = _now() - 600 if case == "ten minutes old" else _now()
    header = signing.signature_header([OLD_SECRET if case == "wrong secret" else SECRET], signed_at, body)
    if case == "tampered body":
        body = body.replace(b'"type": "customer.', b'"type": "customer,', 1)  # one byte changed
    response = hub_receiver.post(body, None if case == "missing header" else header)
    assert response.status_code == 401
    assert response.text  # a short reason for whoever is debugging the integration
    assert hub_receiver.events == []


def test_a_signed_body_that_is_not_json_is_a_400(hub_receiver):
    body = b"not json"
    assert hub_receiver.post(body, signing.signature_header([SECRET], _now(), body)).status_code == 400
    assert hub_receiver.events == []


def test_a_redelivered_event_is_acknowledged_but_processed_once(hub_receiver):
    body = _event()
    key = str(uuid.uuid4())
    first = hub_receiver.post(body, signing.signature_header([SECRET], _now(), body), key=key)
    retry = hub_receiver.post(body, signing.signature_header([SECRET], _now(), body), key=key)
    assert first.is_success and retry.is_success
    assert len(hub_receiver.events) == 1


def test_a_failure_while_processing_lets_the_retry_through():
    calls: list[dict] = []

    def flaky(event):
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("database down")

    server = receiver.make_server("127.0.0.1", 0, SECRET, 300, on_event=flaky)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        r = Receiver(f"http://127.0.0.1:{server.server_address[1]}/")
        body, key = _event(), str(uuid.uuid4())
        assert r.post(body, signing.signature_header([SECRET], _now(), body), key=key).status_code == 500
        assert r.post(body, signing.signature_header([SECRET], _now(), body), key=key).is_success
        assert len(calls) == 2
        r.client.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


NOW = 1_780_000_000
BODY = b'{"event_id":"e-1","type":"customer.churn_risk_changed"}'
GOOD = signing.signature(SECRET, NOW, BODY)
CASES = {
    "valid": signing.signature_header([SECRET], NOW, BODY),
    "valid among several": signing.signature_header([OLD_SECRET, SECRET], NOW, BODY),
    "valid, at the tolerance": signing.signature_header([SECRET], NOW - 300, BODY),
    "wrong secret": signing.signature_header([OLD_SECRET], NOW, BODY),
    "other body": signing.signature_header([SECRET], NOW, BODY + b" "),
    "too old": signing.signature_header([SECRET], NOW - 301, BODY),
    "from the future": signing.signature_header([SECRET], NOW + 301, BODY),
    "empty": "",
    "no timestamp": f"v1={GOOD}",
    "no v1": f"t={NOW}",
    "two timestamps": f"t={NOW},t={NOW},v1={GOOD}",
    "non-numeric timestamp": f"t=now,v1={GOOD}",
    "negative timestamp": f"t=-{NOW},v1={GOOD}",
    "garbage": "hello world",
    "truncated signature": f"t={NOW},v1={GOOD[:-1]}",
}


@pytest.mark.parametrize("name", CASES)
def test_verify_signature_agrees_with_the_hub(name):
    header = CASES[name]
    assert (receiver.verify_signature(header, BODY, SECRET, NOW, 300) is None) == signing.verify(
        header, SECRET, BODY, NOW, 300
    )
    assert (receiver.verify_signature(header, BODY, SECRET, NOW, 300) is None) == name.startswith("valid")


@pytest.mark.parametrize("header", [f"t={NOW},v1=é{GOOD[1:]}", f"t={'9' * 5000},v1={GOOD}"],
                         ids=["non-ASCII signature", "5000-digit timestamp"])
def test_garbled_headers_are_rejected_not_crashed_on(header):
    # compare_digest refuses non-ASCII text and int() refuses over 4300 digits: both must be a plain "no"
    # (the receiver answers 401, not a 500 the hub would retry for a day).
    assert receiver.verify_signature(header, BODY, SECRET, NOW, 300)
    assert signing.verify(header, SECRET, BODY, NOW, 300) is False


def test_a_garbled_header_over_http_is_a_401(hub_receiver):
    body = _event()
    header = signing.signature_header([SECRET], _now(), body).replace("v1=", "v1=\xe9", 1).encode("latin-1")
    response = hub_receiver.client.post(hub_receiver.url, content=body, headers={"Hub-Signature": header})
    assert response.status_code == 401


def test_the_script_refuses_to_start_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "HUB_WEBHOOK_SECRET"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    assert "secret" in done.stderr
