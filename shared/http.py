"""What every service's HTTP API shares: the error body, size and content-type limits, request
metrics by route template, /healthz /readyz /metrics /asyncapi.json, and the bearer-token guard of every
route (roles per route: ``shared/access.py``; tokens: ``shared/tokens.py``)."""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import access, asyncapi
from shared.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    TooManyAttempts,
    Unavailable,
    pydantic_field_errors,
)
from shared.metrics import ServiceMetrics
from shared.text import control_problem
from shared.tokens import Principal

log = logging.getLogger(__name__)


def error_body(error: str, message: str, fields: list[FieldError] | None = None, **extra) -> dict:
    body: dict = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in fields]
    body.update(extra)
    return body


BodyRules = Callable[[str, object], list[FieldError]]
HTTP_ERRORS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "body_too_large",
               415: "unsupported_media_type", 422: "invalid_input", 429: "too_many_attempts"}
DB_RETRY_AFTER_S = 5


def _unavailable(exc: DBAPIError) -> bool:
    """A database that cannot answer now (lock wait ran out, connection refused or lost), as opposed
    to a statement that is wrong (which stays a 500: a bug to fix, not a moment to wait out)."""
    return (isinstance(exc, OperationalError) or exc.connection_invalidated
            or "lock" in type(exc.orig).__name__.lower())


def install_error_handlers(app: FastAPI, body_rules: BodyRules | None = None) -> None:
    """``body_rules(route, body)``: a service's own checks, run on a body that failed its shape
    checks too, so one answer names every failing field."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON",
                                           [FieldError("body", str(errors[0].get("ctx", {}).get("error", "invalid JSON")))]),
                                status_code=400)
        fields = pydantic_field_errors(errors)
        route = getattr(request.scope.get("route"), "path", "")
        if body_rules is not None and isinstance(exc.body, dict):
            named = {f.field for f in fields}
            fields += [f for f in body_rules(route, exc.body) if f.field not in named]
        return JSONResponse(error_body("invalid_input", "some fields are invalid; nothing was changed", fields),
                            status_code=422)

    @app.exception_handler(InvalidInput)
    async def _invalid(_request: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", "some fields are invalid; nothing was changed", exc.errors),
                            status_code=422)

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(error_body("conflict", exc.message, **exc.details), status_code=409)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(error_body("not_found", exc.message), status_code=404)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(SQLAlchemyTimeout)
    async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        """Locked past the engine's short wait, or unreachable: 503, never a bare 500. The transaction
        either committed or rolled back as a whole, so a retry with the same Idempotency-Key is safe:
        a request that was stored is answered as it was the first time."""
        if isinstance(exc, DBAPIError) and not _unavailable(exc):
            raise exc
        log.warning("database unavailable", extra={"fields": {"error": type(getattr(exc, "orig", exc)).__name__}})
        return JSONResponse(error_body(
            "database_unavailable", "the database is busy or unreachable; retry after the given seconds with the "
            "same Idempotency-Key (a request that was stored is answered as it was)",
            retry_after=DB_RETRY_AFTER_S), status_code=503, headers={"Retry-After": str(DB_RETRY_AFTER_S)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Every other 4xx (no such route, a method the route does not take, a body FastAPI cannot
        read: malformed UTF-8, JSON nested past the parser's depth) in the one documented shape."""
        code = HTTP_ERRORS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "server_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OverflowError)
    async def _out_of_range(_request: Request, exc: OverflowError) -> JSONResponse:
        """A number past what the database or a date can hold (the inputs bound the ones they know)."""
        return JSONResponse(error_body("invalid_input", "a number is out of range; nothing was changed",
                                       [FieldError("body", str(exc)[:200])]), status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, exc: DataError) -> JSONResponse:
        """A value the database cannot store (the input checks refuse what they know of: control
        characters, NUL): 422, nothing changed, never a 500."""
        log.warning("value refused by the database", extra={"fields": {"error": type(exc.orig).__name__}})
        return JSONResponse(error_body("invalid_input", "a value cannot be stored; nothing was changed",
                                       [FieldError("body", "contains a value the database cannot store")]),
                            status_code=422)

    @app.exception_handler(Unavailable)
    async def _unavailable_now(_request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(error_body("unavailable", exc.message, retry_after=exc.retry_after, **exc.details),
                            status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(TooManyAttempts)
    async def _too_many(_request: Request, exc: TooManyAttempts) -> JSONResponse:
        return JSONResponse(error_body("too_many_attempts", exc.message, retry_after=exc.retry_after),
                            status_code=429, headers={"Retry-After": str(exc.retry_after)})


class RequestGuard:
    """ASGI middleware: body size limits, JSON content type on JSON routes, metrics per route.

    Runs before FastAPI parses anything, so an oversized or mistyped body is refused unread.
    """

    def __init__(self, app, metrics: ServiceMetrics, max_body: int,  # noqa: ANN001
                 large_bodies: dict[str, tuple[int, str]] | None = None) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.large_bodies = large_bodies or {}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None and self._has_body(scope) and self._header(scope, "content-length") is None:
                receive, refusal = await self._buffer_chunked(receive, self._limit(scope))
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.http_seconds.labels(route).observe(time.perf_counter() - started)

    @staticmethod
    def _header(scope, name: str) -> str | None:  # noqa: ANN001
        for k, v in scope["headers"]:
            if k.decode().lower() == name:
                return v.decode()
        return None

    def _has_body(self, scope) -> bool:  # noqa: ANN001
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return False
        length = self._header(scope, "content-length")
        return (length is not None and length != "0") or self._header(scope, "transfer-encoding") is not None

    @staticmethod
    async def _buffer_chunked(receive, limit: int):  # noqa: ANN001, ANN205
        """A body without Content-Length is read here, up to the limit, then handed on."""
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return receive, _too_large(limit)
        sent = False

        async def replay():  # noqa: ANN202
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return replay, None

    def _rule(self, scope) -> tuple[int, str]:  # noqa: ANN001
        """(byte limit, content type) of the route: JSON under max_body unless it is a large-body route."""
        for suffix, rule in self.large_bodies.items():
            if scope["path"].endswith(suffix):
                return rule
        return self.max_body, "application/json"

    def _limit(self, scope) -> int:  # noqa: ANN001
        return self._rule(scope)[0]

    def _refusal(self, scope):  # noqa: ANN001, ANN202
        for part, value in (("path", scope.get("path", "")), ("query", unquote(scope.get("query_string", b"").decode(
                "latin-1")))):
            problem = control_problem(value)
            if problem:
                return JSONResponse(error_body("invalid_input", "some fields are invalid; nothing was changed",
                                               [FieldError(part, problem)]), status_code=400)
        if not self._has_body(scope):
            return None  # nothing to type-check: e.g. POST …/close
        length = self._header(scope, "content-length")
        limit = self._limit(scope)
        if length is not None and length.isdigit() and int(length) > limit:
            return _too_large(limit)
        ctype = (self._header(scope, "content-type") or "").split(";")[0].strip().lower()
        wanted = self._rule(scope)[1]
        if ctype != wanted:
            return JSONResponse(error_body("unsupported_media_type", f"send {wanted}",
                                           [FieldError("content-type", f"expected {wanted}, got {ctype or 'none'}")]),
                                status_code=415)
        return None



def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(error_body("body_too_large", f"the body is over {limit} bytes",
                                   [FieldError("body", f"at most {limit} bytes")]), status_code=413)


class FieldProblem(BaseModel):
    field: str = Field(description="The failing field: resident.id_number, rows[3].values, file, header…")
    message: str
    valid: list[str] | None = Field(None, description="The accepted codes, where there are few enough to list")
    see: str | None = Field(None, description="Where the accepted codes are listed, where there are many")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx of every service has this shape (README, "Errors")."""

    model_config = ConfigDict(extra="allow")  # e.g. retry_after, final_case, reason, report
    error: str = Field(description="invalid_input, malformed_json, conflict, not_found, unauthorized, forbidden, "
                                   "too_many_attempts, unavailable, database_unavailable, body_too_large…")
    message: str
    fields: list[FieldProblem] | None = None


def document_errors(app: FastAPI) -> None:
    """The app's OpenAPI gives every route's 422 (and 4xx, 5xx) as :class:`ErrorBody`, the shape the
    handlers above answer with, instead of FastAPI's ``HTTPValidationError``."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schemas["ErrorBody"].pop("$defs", {}))
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    for code, response in list(responses.items()):
                        if code.startswith(("4", "5")):
                            response["content"] = error
                    responses.setdefault("4XX", {"description": "Refused: the documented error body", "content": error})
                    responses.setdefault("5XX", {"description": "Unavailable: the documented error body",
                                                 "content": error})
            app.openapi_schema = doc
        return app.openapi_schema
    app.openapi = openapi  # type: ignore[method-assign]


def install_common(app: FastAPI, metrics: ServiceMetrics, readiness: Callable[[], Awaitable[dict]],
                   *, max_body: int, large_bodies: dict[str, tuple[int, str]] | None = None,
                   body_rules: BodyRules | None = None) -> None:
    """``large_bodies``: path suffix → (byte limit, content type) for routes that take more than
    ``max_body`` bytes of JSON (uploads, import chunks)."""
    install_error_handlers(app, body_rules)
    install_auth_errors(app)
    document_errors(app)

    app.add_middleware(RequestGuard, metrics=metrics, max_body=max_body, large_bodies=large_bodies)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        body = await readiness()  # {"ready": bool, "checks": {name: bool}, "problems": {name: words}}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", include_in_schema=False)
    def asyncapi_json() -> JSONResponse:
        """The bus's contract (AsyncAPI 3.0.0), open like /openapi.json; built on the first request, in a thread."""
        return JSONResponse(asyncapi.served())


_bearer = HTTPBearer(auto_error=False, description="a token from `xinfang token create` (README, \"Roles and tokens\")")


class NotAuthenticated(Exception):
    """401: no token, or one the store does not have, or a revoked one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAllowed(Exception):
    """403: a token whose role may not do this."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def install_auth_errors(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(_request: Request, exc: NotAuthenticated) -> JSONResponse:
        return JSONResponse(error_body("unauthorized", exc.message), status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotAllowed)
    async def _forbidden(_request: Request, exc: NotAllowed) -> JSONResponse:
        return JSONResponse(error_body("forbidden", exc.message), status_code=403)


class Guard:
    """The routes' dependencies from the role × route table (``shared/access.py``).

    ``guard = Guard("intake")``; a route takes ``who: Principal = guard("POST /api/v1/cases")`` (or
    ``dependencies=[guard(…)]``): the bearer token resolved to its principal through the app's token
    store (``app.state.tokens``), 401 for no, unknown or revoked token, 403 for a role the table does
    not allow there. ``check_guarded`` refuses an app with a route that is not in the table or does
    not carry its guard."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, key: str):  # noqa: ANN204 - a fastapi Depends
        rule = access.rule(self.service, key)
        if rule.public:
            raise ValueError(f"{self.service}: {key} is public in shared/access.py; it takes no guard")
        allowed = sorted(rule.roles)

        async def principal(request: Request,
                            creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
            if creds is None or not creds.credentials:
                raise NotAuthenticated(f"this route needs a bearer token ({' or '.join(allowed)})")
            record = request.app.state.tokens.lookup(creds.credentials)
            if record is None:
                raise NotAuthenticated("unknown token")
            if record.revoked_at is not None:
                raise NotAuthenticated(f"token {record.id} was revoked")
            who = record.principal
            if not who.has(*allowed):
                raise NotAllowed(f"this route is for {' or '.join(allowed)}; this token is {who.describe()}")
            return who

        principal.access_key = key  # type: ignore[attr-defined] - what check_guarded looks for
        return Depends(principal)


def api_routes(routes: list) -> list[APIRoute]:
    """Every APIRoute of an app, also inside included routers."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif hasattr(r, "original_router"):  # FastAPI's included router
            out += api_routes(r.original_router.routes)
        elif hasattr(r, "routes"):
            out += api_routes(r.routes)
    return out


def route_keys(route: APIRoute) -> list[str]:
    return [f"{m} {route.path}" for m in sorted(route.methods or ()) if m != "HEAD"]


def _guards(dependant) -> set[str]:  # noqa: ANN001
    keys = set()
    for dep in dependant.dependencies:
        key = getattr(dep.call, "access_key", None)
        if key is not None:
            keys.add(key)
        keys |= _guards(dep)
    return keys


def check_guarded(app: FastAPI, service: str) -> None:
    """No route is open by accident: each is open by name (``access.OPEN``), public in the table, or
    carries the guard of its own table entry."""
    for route in api_routes(app.routes):
        for key in route_keys(route):
            if key in access.OPEN:
                continue
            rule = access.rule(service, key)  # KeyError: a route missing from the table
            if not rule.public and key not in _guards(route.dependant):
                raise RuntimeError(f"{service}: {key} does not carry its guard (shared/access.py)")
