"""A service's HTTP processes when `hub serve` runs them apart from its workers (hub/serve.py).

Each is the service's usual app without relay, consumers or other workers (<SERVICE>_RUN_WORKERS=false):
those run in one workers process, so CPU-bound background work does not share a GIL with the requests,
and the API can use more than one core. Probes and scrapes reach the service's one address and land on
any of its processes, so these answer for the whole service: /readyz is ready only when this process,
the workers process and the ingestion process (if any) are, and /metrics is the workers process's
(every documented counter is counted there: consumers, outbox relay, webhook deliveries).

Identity's ingestion is CPU-bound too (a 500-event batch holds the GIL for tens of milliseconds while it
is validated), so its processes on the service's port pass POST /v1/touchpoints, unparsed, to one
ingestion process of the same app on a private port, and keep their GIL for the reads.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable

import httpx

WORKERS_URL = "HUB_SERVE_WORKERS_URL"  # set by `hub serve`: where the workers process answers
INGEST_URL = "HUB_SERVE_INGEST_URL"  # set by `hub serve` for the processes that pass ingestion on
INGESTION = ("POST", "/v1/touchpoints")
# Connection-level headers are the hop's own (RFC 9110 §7.6.1); the rest pass through unchanged (the
# body's bytes too, so a Content-Length still holds).
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
               b"upgrade"}
_SERVERS_OWN = {b"date", b"server"}  # the answering uvicorn adds its own
_PROBE_TIMEOUT_S = 3.0
# A CPU-bound request (validating an ingested batch on a worker thread) holds the GIL for this long
# before the event loop, with a read to answer, gets it back; Python's default is 5 ms.
SWITCH_INTERVAL_S = float(os.environ.get("HUB_API_SWITCH_INTERVAL_S", "0.0005"))


def api_process(create_app: Callable):
    """The app factory of an API process of the service whose factory is `create_app`."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # httpx logs each request at INFO; here it only carries ingestion and probes, one line each otherwise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return ApiProcess(create_app(), os.environ[WORKERS_URL], os.environ.get(INGEST_URL))


async def _capture(app, scope, receive) -> tuple[int, bytes]:
    status, body = 500, []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


async def _respond(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def combined_readiness(processes: list[tuple[str, dict | None, str | None]]) -> dict:
    """(who, readyz body or None, why not) per process. Each check holds when it holds in every process;
    a failure names the process it failed in; a process that did not answer fails `workers`."""
    checks: dict[str, dict] = {}
    for who, body, _ in processes:
        for name, check in (body or {}).get("checks", {}).items():
            found = checks.setdefault(name, {"failed": [], "detail": check["detail"]})
            if not check["ok"]:
                found["failed"].append(f"{who}: {check['detail']}")
            elif who == "workers process":  # its view of the relay and consumers is the one that matters
                found["detail"] = check["detail"]
    for who, body, why in processes:
        if body is None:
            checks.setdefault("workers", {"failed": [], "detail": ""})["failed"].append(f"{who}: {why}")
    merged = {name: {"ok": not c["failed"], "detail": "; ".join(c["failed"]) or c["detail"]}
              for name, c in checks.items()}
    return {"ready": all(c["ok"] for c in merged.values()), "checks": merged}


class ApiProcess:
    """ASGI: /readyz and /metrics for the whole service, ingestion to the ingestion process (when
    there is one), everything else to the app."""

    def __init__(self, app, workers_url: str, ingest_url: str | None = None):
        self.app, self.workers_url = app, workers_url.rstrip("/")
        self.ingest_url = ingest_url.rstrip("/") if ingest_url else None
        self._client: httpx.AsyncClient | None = None
        self._ingest: httpx.AsyncClient | None = None

    @property
    def state(self):  # what callers of the app reach for (tests, tools)
        return self.app.state

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S)
        return self._client

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if scope["method"] == "GET" and scope["path"] == "/readyz":
                return await self._readyz(scope, receive, send)
            if scope["method"] == "GET" and scope["path"] == "/metrics":
                return await self._metrics(send)
            if self.ingest_url and (scope["method"], scope["path"]) == INGESTION:
                return await self._pass_on(scope, receive, send)
        if scope["type"] == "lifespan":
            try:
                return await self.app(scope, receive, send)
            finally:
                for client in (self._client, self._ingest):
                    if client is not None:
                        await client.aclose()
                self._client = self._ingest = None
        await self.app(scope, receive, send)

    async def _pass_on(self, scope, receive, send) -> None:
        """The request as it came (headers, trace context, body streamed), the answer as it was given."""
        if self._ingest is None:  # no timeout: the client's own decides, as when it is served here
            self._ingest = httpx.AsyncClient(base_url=self.ingest_url, timeout=None,
                                             limits=httpx.Limits(max_keepalive_connections=32))
            self._ingest.headers.clear()  # nothing of its own (user-agent, accept…) added to what passes
        disconnected = False

        async def body():
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    disconnected = True
                    raise httpx.ReadError("the client left")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        path = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        request = self._ingest.build_request(scope["method"], path.decode("latin-1"), content=body(),
                                             headers=[(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP])
        try:
            response = await self._ingest.send(request, stream=True)
        except httpx.HTTPError:
            if disconnected:
                return
            detail = {"type": "https://errors.customer-hub.dev/503", "title": "Service Unavailable", "status": 503,
                      "detail": "ingestion is restarting, retry shortly"}
            return await _respond(send, 503, json.dumps(detail, separators=(",", ":")).encode(),
                                  b"application/problem+json")
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw
                                    if k.lower() not in _HOP_BY_HOP and k.lower() not in _SERVERS_OWN]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _readyz(self, scope, receive, send) -> None:
        status, body = await _capture(self.app, scope, receive)
        try:
            own = (json.loads(body), None)
        except ValueError:
            own = (None, f"readyz answered {status}")
        others = [("workers process", self.workers_url)] + ([("ingestion process", self.ingest_url)]
                                                             if self.ingest_url else [])
        answers = await asyncio.gather(*(self._probe(url) for _, url in others))
        result = combined_readiness([("api process", *own)] + [(who, *a) for (who, _), a in zip(others, answers)])
        await _respond(send, 200 if result["ready"] else 503, json.dumps(result, separators=(",", ":")).encode(),
                       b"application/json")

    async def _probe(self, base: str) -> tuple[dict | None, str | None]:
        try:
            return (await self._http().get(base + "/readyz")).json(), None
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"not answering ({type(exc).__name__})"

    async def _metrics(self, send) -> None:
        try:
            r = await self._http().get(self.workers_url + "/metrics")
        except httpx.HTTPError as exc:
            return await _respond(send, 503, f"workers process not answering ({type(exc).__name__})\n".encode(),
                                  b"text/plain; charset=utf-8")
        await _respond(send, r.status_code, r.content,
                       r.headers.get("content-type", "text/plain; charset=utf-8").encode())
