"""`hub serve identity` and `hub serve booking` as a workers process plus API processes (hub/serve.py):
how many processes, and the readiness the API processes answer for the whole service (shared/serving.py)."""
from __future__ import annotations

import json

import pytest

from hub.serve import _reuseport_sockets, api_processes
from shared.serving import combined_readiness


def _checks(**ok: bool) -> dict:
    return {"ready": all(ok.values()), "checks": {n: {"ok": v, "detail": f"{n} {'fine' if v else 'down'}"}
                                                  for n, v in ok.items()}}


def test_ready_when_every_process_is_and_the_workers_process_speaks_for_the_workers():
    result = combined_readiness([("api process", _checks(postgres=True, kafka=True, workers=True), None),
                                 ("workers process", _checks(postgres=True, kafka=True, workers=True), None),
                                 ("ingestion process", _checks(postgres=True, kafka=True, workers=True), None)])
    assert result["ready"] is True
    assert result["checks"]["workers"] == {"ok": True, "detail": "workers fine"}


def test_a_check_failing_in_any_process_fails_and_says_where():
    result = combined_readiness([("api process", _checks(postgres=True, kafka=False, workers=True), None),
                                 ("workers process", _checks(postgres=True, kafka=True, workers=False), None)])
    assert result["ready"] is False
    assert result["checks"]["kafka"] == {"ok": False, "detail": "api process: kafka down"}
    assert result["checks"]["workers"] == {"ok": False, "detail": "workers process: workers down"}
    assert result["checks"]["postgres"]["ok"] is True


def test_a_process_that_does_not_answer_is_not_ready():
    result = combined_readiness([("api process", _checks(postgres=True, kafka=True, workers=True), None),
                                 ("workers process", _checks(postgres=True, kafka=True, workers=True), None),
                                 ("ingestion process", None, "not answering (ConnectError)")])
    assert result["ready"] is False
    assert result["checks"]["workers"] == {"ok": False, "detail": "ingestion process: not answering (ConnectError)"}


@pytest.mark.parametrize("service", ["identity", "booking"])
@pytest.mark.parametrize(("env", "expected"), [
    ({}, "default"),
    ({"API_PROCESSES": "3"}, 3),
    ({"API_PROCESSES": "0"}, 0),  # one process for everything, as before
    ({"RUN_WORKERS": "false"}, 0),  # an API-only replica: nothing to split off
    ({"RUN_WORKERS": "false", "API_PROCESSES": "3"}, 0),
])
def test_the_api_runs_in_processes_of_its_own_unless_told_not_to(monkeypatch, service, env, expected):
    prefix = service.upper()
    for name in ("API_PROCESSES", "RUN_WORKERS"):
        monkeypatch.delenv(f"{prefix}_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"{prefix}_{name}", value)
    found = api_processes(service)
    assert found >= 2 if expected == "default" else found == expected


@pytest.mark.parametrize("service", ["loyalty", "feedback", "insights"])
def test_other_services_keep_one_process(monkeypatch, service):
    monkeypatch.setenv(f"{service.upper()}_API_PROCESSES", "3")
    assert api_processes(service) == 0


def test_the_api_processes_each_get_a_share_of_the_connections():
    """One socket per API process on the same port: the kernel spreads new connections over them, so
    keep-alive clients do not all end up on whichever process happened to be waiting in accept."""
    import socket

    listeners = _reuseport_sockets("127.0.0.1", 0, 2)
    port = listeners[0].getsockname()[1]
    assert listeners[1].getsockname()[1] == port
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        accepted = []
        for listener in listeners:
            listener.setblocking(False)
            count = 0
            while True:
                try:
                    listener.accept()[0].close()
                except BlockingIOError:
                    break
                count += 1
            accepted.append(count)
        assert sum(accepted) == 40 and min(accepted) >= 5, accepted
    finally:
        for sock in (*clients, *listeners):
            sock.close()


@pytest.mark.parametrize("holder", ["another program", "another instance of the service"])
def test_a_taken_port_fails_the_service_at_start(monkeypatch, holder):
    """Even when the holder listens with SO_REUSEPORT as the API processes do, which would otherwise let
    two instances share the port silently."""
    import socket

    from hub.serve import _supervise

    if holder == "another program":
        taken = [socket.socket()]
        taken[0].bind(("127.0.0.1", 0))
        taken[0].listen()
    else:
        taken = _reuseport_sockets("127.0.0.1", 0, 2)
    monkeypatch.setenv("BOOKING_PORT", str(taken[0].getsockname()[1]))
    try:
        assert _supervise("booking", 2) == 3
    finally:
        for sock in taken:
            sock.close()


# --- the API processes pass ingestion on, and answer probes for the whole service -----------------------

class _Upstream:
    """A stub process of the service on a free port: records what reached it, answers as told."""

    def __init__(self, status=200, body=b'{"accepted":1}', readyz=None):
        import socket
        import threading

        import uvicorn

        self.seen, self.status, self.body, self.readyz = [], status, body, readyz
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan="off", interface="asgi3"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    async def app(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append({"method": scope["method"], "path": scope["path"], "query": scope["query_string"],
                          "headers": scope["headers"], "body": body})
        if scope["path"] == "/readyz":
            payload, status, kind = json.dumps(self.readyz).encode(), 200 if self.readyz["ready"] else 503, b"json"
        else:
            payload, status, kind = self.body, self.status, b"json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/" + kind), (b"x-trace-id", b"abc")]})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self):
        import time

        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)


async def _never_called(scope, receive, send):  # the app behind: must not see what is passed on
    raise AssertionError(f"the app got {scope.get('path')}")


async def _call(front_app, method, path, **kwargs):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front_app), base_url="http://identity") as c:
        c.headers.clear()  # only what the test sends
        return await c.request(method, path, **kwargs)


def test_ingestion_is_passed_on_as_it_came_and_answered_as_the_ingestion_process_answered():
    import asyncio

    from shared.serving import ApiProcess

    body = b'{"events": [{"type": "store.visited"}]}'
    with _Upstream(status=207, body=b'{"accepted":1,"rejected":1}') as ingest:
        front = ApiProcess(_never_called, "http://127.0.0.1:9", ingest.url)
        r = asyncio.run(_call(front, "POST", "/v1/touchpoints?dry=1", content=body,
                              headers={"Authorization": "Bearer k", "Content-Type": "application/json",
                                       "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}))
    assert (r.status_code, r.content, r.headers["content-type"]) == (207, b'{"accepted":1,"rejected":1}',
                                                                     "application/json")
    assert r.headers["x-trace-id"] == "abc"
    [seen] = ingest.seen
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == ("POST", "/v1/touchpoints", b"dry=1", body)
    headers = dict(seen["headers"])
    assert headers[b"authorization"] == b"Bearer k" and headers[b"traceparent"].startswith(b"00-0af76519")
    assert headers[b"content-length"] == str(len(body)).encode()
    assert not {b"user-agent", b"accept", b"accept-encoding"} & set(headers)  # nothing added on the way


def test_ingestion_answers_503_while_the_ingestion_process_is_away():
    import asyncio

    from shared.serving import ApiProcess

    front = ApiProcess(_never_called, "http://127.0.0.1:9", "http://127.0.0.1:9")
    r = asyncio.run(_call(front, "POST", "/v1/touchpoints", content=b"{}"))
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 503


def test_readyz_and_metrics_speak_for_the_whole_service():
    import asyncio

    from shared.serving import ApiProcess

    async def own(scope, receive, send):  # this process's own /readyz
        assert scope["path"] == "/readyz"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(_checks(postgres=True, workers=True)).encode()})

    with _Upstream(body=b"hub_outbox_published_total 3.0\n", readyz=_checks(postgres=True, workers=False)) as workers, \
            _Upstream(readyz=_checks(postgres=True, workers=True)) as ingest:
        front = ApiProcess(own, workers.url, ingest.url)

        async def probes():  # one event loop, as in the API process
            return await _call(front, "GET", "/readyz"), await _call(front, "GET", "/metrics")

        ready, metrics = asyncio.run(probes())
    assert ready.status_code == 503
    assert ready.json()["checks"]["workers"] == {"ok": False, "detail": "workers process: workers down"}
    assert metrics.status_code == 200 and metrics.content == b"hub_outbox_published_total 3.0\n"
