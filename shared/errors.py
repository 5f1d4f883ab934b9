"""Errors a use case raises; the HTTP layer maps them to status codes (plain Python, no web imports)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    valid: list[str] | None = None  # the accepted codes, where there are few enough to list
    see: str | None = None  # where the accepted codes are listed, where there are many


class InvalidInput(Exception):
    """The input breaks a rule; nothing was changed. Names every failing field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass
class Conflict(Exception):
    message: str
    details: dict = field(default_factory=dict)


@dataclass
class NotFound(Exception):
    message: str


@dataclass
class TooManyAttempts(Exception):
    """Too many wrong attempts (the resident's routes): 429 with ``Retry-After`` seconds."""

    message: str
    retry_after: int


def pydantic_field_errors(errors: list[dict]) -> list[FieldError]:
    """pydantic's errors as FieldErrors named like ``resident.id_number`` or ``problems[2].title``."""
    fields = []
    for e in errors:
        parts = [p for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        name = ""
        for p in parts:
            name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
        fields.append(FieldError(field=name or "body", message=e.get("msg", "invalid").removeprefix("Value error, ")))
    return fields


@dataclass
class Unavailable(Exception):
    """Something this request depends on cannot answer now (503 with ``Retry-After``); nothing was changed."""

    message: str
    retry_after: int = 5
    details: dict = field(default_factory=dict)  # e.g. the report of an import that stopped
