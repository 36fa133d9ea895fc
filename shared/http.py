"""What every service's HTTP app shares: problem-details errors, /healthz, /readyz, /metrics and a
server span per request (W3C traceparent honoured)."""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from http import HTTPStatus

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from shared.db import DatabaseBusy
from shared.errors import DomainError
from shared.telemetry import context_from_carrier, tracer

log = logging.getLogger(__name__)
ReadinessCheck = Callable[[], tuple[bool, str]]


def problem(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None,
            extra: dict | None = None) -> JSONResponse:
    body = {**(extra or {}),
        "type": f"https://errors.customer-hub.dev/{status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict]:
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem(400, "the request body is not valid JSON", _field_errors(exc))
        return problem(422, "the request does not match the schema", _field_errors(exc))

    @app.exception_handler(HTTPException)  # Starlette's base: also unknown routes (404) and methods (405)
    async def _http(_: Request, exc: HTTPException):
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError):
        return problem(exc.status, exc.detail, extra=jsonable_encoder(exc.extra))

    @app.exception_handler(DatabaseBusy)
    async def _busy(_: Request, exc: DatabaseBusy):
        return problem(503, f"overloaded, retry shortly: {exc}", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):  # still a problem body, and logged with its trace
        log.exception("unhandled error")
        return problem(500, "internal error; it has been logged")


NO_NATIVE_TELEMETRY = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


class _ServerSpans:
    """One server span per request, continuing the caller's trace. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware (`@app.middleware`) cost about a millisecond of CPU per request."""

    def __init__(self, app, service: str):
        self.app, self.tracer = app, tracer(service)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate")}
        token = otel_context.attach(context_from_carrier(carrier))
        try:
            with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}",
                                                   kind=trace.SpanKind.SERVER) as span:
                async def send_with_status(message):
                    if message["type"] == "http.response.start":
                        span.set_attribute("http.status_code", message["status"])
                    await send(message)

                await self.app(scope, receive, send_with_status)
                route = scope.get("route")
                if route is not None:  # the template, not the path: ids and link tokens stay out of traces
                    span.update_name(f"{scope['method']} {route.path}")
        finally:
            otel_context.detach(token)


def install_tracing(app: FastAPI, service: str) -> None:
    app.add_middleware(_ServerSpans, service=service)


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="The process is alive")
    def healthz():
        return {"status": "ok"}

    @router.get("/readyz", summary="Every dependency is reachable (503 otherwise)")
    def readyz():
        results = {}
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:
                ok, detail = False, repr(exc)
            results[name] = {"ok": ok, "detail": detail}
        ready = all(r["ok"] for r in results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_service_app(
    *,
    title: str,
    description: str,
    settings,
    key_verifier,
    readiness: dict[str, ReadinessCheck],
    routers: list[APIRouter],
    lifespan,
) -> FastAPI:
    """The FastAPI app of one service with the platform's error format, ops routes and tracing."""
    # FastAPI's own telemetry is off: it would add a second server span per request (with the raw path,
    # survey tokens included), spans for every dependency, and log validation failures with their input.
    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan,
                  **NO_NATIVE_TELEMETRY)
    app.state.settings = settings
    app.state.key_verifier = key_verifier
    install_error_handlers(app)
    install_tracing(app, settings.service_name)
    app.include_router(ops_router(readiness))
    for router in routers:
        app.include_router(router)
    return app


async def in_transaction(request: Request, use_case, *args, **kwargs):
    """Run `use_case(cur, *args)` in one transaction on a worker thread (the DB driver blocks); domain
    errors it raises become problem responses through the handlers above."""
    db = request.app.state.db

    def run():
        with db.transaction() as cur:
            return use_case(cur, *args, **kwargs)

    return await run_in_threadpool(run)
