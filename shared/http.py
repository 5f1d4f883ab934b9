"""What every service's HTTP API shares: the error body, size and content-type limits, request
metrics by route template, /healthz /readyz /metrics, and bearer tokens per role."""
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

from shared.errors import Conflict, FieldError, InvalidInput, NotFound, pydantic_field_errors
from shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)


def error_body(error: str, message: str, fields: list[FieldError] | None = None, **extra) -> dict:
    body: dict = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in fields]
    body.update(extra)
    return body


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON",
                                           [FieldError("body", str(errors[0].get("ctx", {}).get("error", "invalid JSON")))]),
                                status_code=400)
        return JSONResponse(error_body("invalid_input", "some fields are invalid; nothing was changed",
                                       pydantic_field_errors(errors)), status_code=422)

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

    def __init__(self, app, metrics: ServiceMetrics, max_body: int, max_upload: int,  # noqa: ANN001
                 upload_suffixes: tuple[str, ...] = ()) -> None:
        self.app, self.metrics = app, metrics
        self.max_body, self.max_upload, self.upload_suffixes = max_body, max_upload, upload_suffixes

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
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            else:
                await self.app(scope, self._limited(receive, self._limit(scope)), send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.http_seconds.labels(route).observe(time.perf_counter() - started)

    def _limit(self, scope) -> int:  # noqa: ANN001
        return self.max_upload if scope["path"].endswith(self.upload_suffixes) and self.upload_suffixes else self.max_body

    def _refusal(self, scope):  # noqa: ANN001, ANN202
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        length = headers.get("content-length")
        limit = self._limit(scope)
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse(error_body("body_too_large", f"the body is over {limit} bytes",
                                           [FieldError("body", f"at most {limit} bytes")]), status_code=413)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        is_upload = bool(self.upload_suffixes) and scope["path"].endswith(self.upload_suffixes)
        wanted = "multipart/form-data" if is_upload else "application/json"
        if ctype != wanted:
            return JSONResponse(error_body("unsupported_media_type", f"send {wanted}",
                                           [FieldError("content-type", f"expected {wanted}, got {ctype or 'none'}")]),
                                status_code=415)
        return None

    def _limited(self, receive, limit: int):  # noqa: ANN001, ANN202
        seen = 0

        async def wrapped():  # noqa: ANN202
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body with no Content-Length
                    raise BodyTooLarge(limit)
            return message
        return wrapped


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def install_common(app: FastAPI, metrics: ServiceMetrics, readiness: Callable[[], Awaitable[dict[str, bool]]],
                   *, max_body: int, max_upload: int, upload_suffixes: tuple[str, ...] = ()) -> None:
    install_error_handlers(app)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(error_body("body_too_large", f"the body is over {exc.limit} bytes",
                                       [FieldError("body", f"at most {exc.limit} bytes")]), status_code=413)

    app.add_middleware(RequestGuard, metrics=metrics, max_body=max_body, max_upload=max_upload,
                       upload_suffixes=upload_suffixes)

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
