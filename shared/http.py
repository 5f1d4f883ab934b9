"""What every service's HTTP API shares: the error body, size and content-type limits, request
metrics by route template, /healthz /readyz /metrics /asyncapi.json, and bearer tokens per role."""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from shared import asyncapi
from shared.errors import Conflict, FieldError, InvalidInput, NotFound, pydantic_field_errors
from shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)


def error_body(error: str, message: str, fields: list[FieldError] | None = None, **extra) -> dict:
    body: dict = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in fields]
    body.update(extra)
    return body


BodyRules = Callable[[str, object], list[FieldError]]


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


def install_common(app: FastAPI, metrics: ServiceMetrics, readiness: Callable[[], Awaitable[dict[str, bool]]],
                   *, max_body: int, large_bodies: dict[str, tuple[int, str]] | None = None,
                   body_rules: BodyRules | None = None) -> None:
    """``large_bodies``: path suffix → (byte limit, content type) for routes that take more than
    ``max_body`` bytes of JSON (uploads, import chunks)."""
    install_error_handlers(app, body_rules)

    app.add_middleware(RequestGuard, metrics=metrics, max_body=max_body, large_bodies=large_bodies)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness()
        return JSONResponse({"ready": all(checks.values()), "checks": checks},
                            status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", include_in_schema=False)
    def asyncapi_json() -> JSONResponse:
        """The bus's contract (AsyncAPI 3.0.0), open like /openapi.json; built on the first request, in a thread."""
        return JSONResponse(asyncapi.served())


_bearer = HTTPBearer(auto_error=False)


def require_role(role: str, token: SecretStr | None) -> Callable:
    """A dependency admitting a bearer token of ``role``; an unset token leaves the role open."""

    def check(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        if token is None:
            return role
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            from fastapi import HTTPException
            raise HTTPException(status_code=401, detail=f"a {role} bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return role
    return check
