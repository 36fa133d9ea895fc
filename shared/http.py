"""What every service's HTTP app shares: problem-details errors, /healthz, /readyz, /metrics and a
server span per request (W3C traceparent honoured)."""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
import orjson
from fastapi.responses import JSONResponse, Response
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel
from starlette.exceptions import HTTPException

from shared.db import TRANSIENT_DB_ERRORS, DatabaseBusy
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

    async def _database_down(_: Request, exc: Exception):  # a restart or failover, not a bug: clients retry
        log.warning("database unavailable: %r", exc)
        return problem(503, "database unavailable, retry shortly", headers={"Retry-After": "2"})

    for transient in TRANSIENT_DB_ERRORS:
        app.add_exception_handler(transient, _database_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):  # still a problem body, and logged with its trace
        log.exception("unhandled error")
        return problem(500, "internal error; it has been logged")


BIGINT_MAX = 2**63 - 1  # ids, amounts and cursors a client sends are stored in bigint columns
MIN_YEAR, MAX_YEAR = 1900, 2299  # ClickHouse's DateTime64 range, the narrowest of the stores
MAX_OFFSET = timedelta(hours=14)  # every real zone is within UTC-12..UTC+14; Postgres refuses beyond 15:59


def storable_day(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be within the years {MIN_YEAR}..{MAX_YEAR}")
    return value


def storable_timestamp(value: datetime) -> datetime:
    """A date and time, with an offset or without (a store's wall-clock time), that stores and time zone
    arithmetic can take: no year 1 or 9999 to overflow converting it, no offset no zone has."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise ValueError("the UTC offset must be within -14:00..+14:00")
    storable_day(value.date())
    return value


def storable_instant(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError("needs a timezone (e.g. 2026-03-29T10:00:00+08:00)")
    return storable_timestamp(value)


# What a client sends, refused with a 422 saying why when a store could not hold it or converting it
# would overflow (not a 500 from the database or the datetime arithmetic).
Instant = Annotated[datetime, AfterValidator(storable_instant)]  # with its offset
Timestamp = Annotated[datetime, AfterValidator(storable_timestamp)]  # with an offset or store-local
Day = Annotated[date, AfterValidator(storable_day)]


PROBLEM = "application/problem+json"
PROBLEM_SCHEMA = {
    "title": "Problem",
    "description": "RFC 9457 problem details: every error of the API has this shape; some add fields that help "
                   "the caller act (alternatives, per-event results).",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "title": "Type"},
        "title": {"type": "string", "title": "Title"},
        "status": {"type": "integer", "title": "Status"},
        "detail": {"type": "string", "title": "Detail", "description": "What was wrong, for a person to read."},
        "errors": {"type": "array", "title": "Errors", "description": "One per invalid field.",
                   "items": {"type": "object", "required": ["field", "message"],
                             "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "additionalProperties": True,
}
# Answers any route may give, whatever its handler does (see install_error_handlers).
COMMON_PROBLEMS = {
    "401": "Missing or invalid API key",
    "403": "The key's role may not do this",
}
BODY_PROBLEMS = {"400": "The request body is not valid JSON"}


def _api_routes(app: FastAPI) -> list:
    """Every API route, also inside routers FastAPI keeps as lazily expanded groups."""
    from fastapi import routing

    contexts = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    return [route for route in contexts if getattr(route, "dependant", None) is not None]


def _calls_principal(dependant) -> bool:
    from shared.auth import principal

    stack = [dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is principal:
            return True
        stack.extend(dependant.dependencies)
    return False


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document tell the truth about errors: they are problem details served as
    application/problem+json (FastAPI would document its own 422 body as application/json), and every
    keyed route may answer 401 and 403, every route with a JSON body 400."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        keyed = {route.operation_id or route.unique_id for route in _api_routes(app)
                 if _calls_principal(route.dependant)}
        problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for methods in document.get("paths", {}).values():
            for operation in methods.values():
                responses = operation.setdefault("responses", {})
                extra = {**(COMMON_PROBLEMS if operation.get("operationId") in keyed else {}),
                         **(BODY_PROBLEMS if "requestBody" in operation else {})}
                for status, description in extra.items():
                    responses.setdefault(status, {"description": description})
                for status, response in responses.items():
                    content = response.get("content", {})
                    default_422 = content.get("application/json", {}).get("schema", {}).get("$ref", "").endswith(
                        "/HTTPValidationError")
                    if status[:1] in "45" and (not content or default_422):
                        response["content"] = problem
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's own 422 body, never sent here
            schemas.pop(unused, None)
        return document

    app.openapi = openapi


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


def _escapes_nul(body: bytes) -> bool:
    """Whether JSON text has U+0000 in a string: a `\\u0000` whose backslash is not itself escaped (an
    even number of backslashes before it). A substring search first: a regular expression with a
    look-behind took 30 ms over a 1000-event batch, this well under 1."""
    at = body.find(b"\\u0000")
    while at != -1:
        start = at
        while start > 0 and body[start - 1] == 0x5C:  # backslash
            start -= 1
        if (at - start) % 2 == 0:
            return True
        at = body.find(b"\\u0000", at + 1)
    return False


class _RefuseNul:
    """Postgres cannot store U+0000 in text (the driver raises), so a request carrying it in its path,
    query or JSON body is refused where it comes in: a 422 naming where, not a 500 halfway through a
    use case. A plain ASGI middleware, for the same reason as _ServerSpans."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        where = None
        if "\x00" in scope["path"]:
            where = "path"
        elif b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            where = "query"
        else:
            body, more = [], True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client left: let the app see it
                    return await self.app(scope, _replay(b"".join(body), receive, message), send)
                body.append(message.get("body", b""))
                more = message.get("more_body", False)
            content = b"".join(body)
            if _escapes_nul(content):
                where = "body"
            receive = _replay(content, receive)
        if where is not None:
            refusal = problem(422, f"text may not contain NUL (U+0000) characters: the {where} has one",
                              [{"field": where, "message": "contains U+0000"}])
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive, then: dict | None = None):
    """A receive channel that gives the buffered body once, then what the client sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}] + ([then] if then else [])

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed


def install_tracing(app: FastAPI, service: str) -> None:
    app.add_middleware(_ServerSpans, service=service)


class Health(BaseModel):
    status: str


class CheckResult(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, CheckResult]


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", response_model=Health, summary="The process is alive")
    def healthz():
        return {"status": "ok"}

    @router.get("/readyz", response_model=Readiness, summary="Every dependency is reachable (503 otherwise)",
                responses={503: {"model": Readiness, "description": "A dependency is not reachable"}})
    def readyz():
        results = {}
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:
                ok, detail = False, repr(exc)
            results[name] = {"ok": bool(ok), "detail": str(detail)}  # the documented shape, whatever a check returns
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
    app.add_middleware(_RefuseNul)  # before tracing: its refusals are traced too
    install_tracing(app, settings.service_name)
    document_problems(app)
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


async def answered(request: Request, use_case, *args, **kwargs) -> Response:
    """in_transaction's result as the route's answer (its status code), encoded by FastJSONResponse."""
    result = await in_transaction(request, use_case, *args, **kwargs)
    return FastJSONResponse(result, status_code=request.scope["route"].status_code or 200)


def _json_default(value):
    """What orjson does not encode itself, as FastAPI's jsonable_encoder would."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class FastJSONResponse(JSONResponse):
    """A handler's plain dict as JSON through orjson. Returned as a Response, it skips FastAPI's
    jsonable_encoder, which walked every value of a booking's answer first (a sixth of the request's
    framework time)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
