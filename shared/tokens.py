"""The API's bearer tokens: created by ``xinfang token create``, stored hashed, read by every service.

A token is ``xf_`` + ``secrets.token_urlsafe(32)`` (256 random bits; the prefix lets secret scanners
and people recognise one). Only its SHA-256 is stored. A plain, fast hash is right here: a password
needs a slow, salted hash because it has little entropy and can be guessed; a 256-bit random token
cannot be guessed, so a fast hash of it is as hard to reverse as the token is to guess, and the
lookup costs one SHA-256 per request. The store is one JSON file (``XF_TOKENS_FILE``, default
``<data_dir>/secrets/tokens.json``, mode 0600), replaced atomically on every change; the services
stat it on each request and re-read it when it changed, so a token created or revoked by the CLI
counts at once, without a restart.

Each token has an id (``tk-…``, what ``list`` shows and ``revoke`` takes), one role
(``shared/access.py``), what that role is bound to — a clerk's or the supervision office's staff id,
a unit code, an agent id, a leader id —, a note, when it was created and when it was revoked (a
revoked token stays listed). A token carries more than one role only when made by ``create`` with
several roles, which only the tests do (their fixture clients use one clerk + supervisor + ops
token, so that every existing test calls every route it needs with one client); the roles bound to
a directory id (agent, unit, leader) are never combined with another, and the CLI makes single-role
tokens.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from shared.access import BINDING, ROLES, SCOPED
from shared.settings import Settings

log = logging.getLogger(__name__)

STAFF_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FIRST_TOKENS = "first-tokens.txt"


def store_path(settings: Settings) -> Path:
    if settings.tokens_file is not None:
        return Path(settings.tokens_file)
    from shared.secrets import secrets_dir
    return secrets_dir(settings) / "tokens.json"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request's token says it is: what the routes decide with, and record as the actor."""

    token_id: str
    roles: tuple[str, ...]
    staff_id: str | None = None
    unit: str | None = None
    agent_id: str | None = None
    leader_id: str | None = None

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    @property
    def scoped(self) -> bool:
        """A unit, agent or leader token: it sees only its own cases."""
        return any(r in SCOPED for r in self.roles)

    def describe(self) -> str:
        bound = [f"{k} {v}" for k, v in (("staff", self.staff_id), ("unit", self.unit), ("agent", self.agent_id),
                                         ("leader", self.leader_id)) if v]
        return "+".join(self.roles) + (f" ({', '.join(bound)})" if bound else "")


@dataclass
class TokenRecord:
    id: str
    sha256: str
    roles: list[str]
    created_at: str
    staff_id: str | None = None
    unit: str | None = None
    agent_id: str | None = None
    leader_id: str | None = None
    note: str = ""
    revoked_at: str | None = None
    extra: dict = field(default_factory=dict)  # fields a later version wrote: kept as they are

    @property
    def principal(self) -> Principal:
        return Principal(self.id, tuple(self.roles), self.staff_id, self.unit, self.agent_id, self.leader_id)

    def to_json(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}

    @classmethod
    def from_json(cls, d: dict) -> TokenRecord:
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})


# --- the services' side: read, re-read when changed ------------------------------------------

class TokenStore:
    """The token file as a service reads it: ``resolve`` is one stat, and a re-read when it changed.

    A missing file means no tokens (every guarded route answers 401); an unreadable one too, with
    an error logged: the store fails closed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._signature: tuple | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    def _signature_now(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        sig = self._signature_now()
        if sig == self._signature:
            return
        self._signature = sig
        if sig is None:
            self._by_hash = {}
            return
        try:
            records = _parse(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError) as exc:
            log.error("the token file %s cannot be read (%s): every token is refused until it is fixed",
                      self.path, type(exc).__name__)
            self._by_hash = {}
            return
        self._by_hash = {r.sha256: r for r in records}

    def lookup(self, secret: str) -> TokenRecord | None:
        """The token's record (revoked or not), or None for a token the store does not have."""
        self._refresh()
        return self._by_hash.get(digest(secret)) if secret else None

    def active_count(self) -> int:
        self._refresh()
        return sum(1 for r in self._by_hash.values() if r.revoked_at is None)


def _parse(text: str) -> list[TokenRecord]:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ValueError("not a token file")
    return [TokenRecord.from_json(d) for d in data["tokens"]]


# --- the operator's side: create, list, revoke -----------------------------------------------

class TokenError(ValueError):
    """A token that cannot be made as asked, or an id the store does not have."""


@contextmanager
def _locked(path: Path) -> Iterator[list[TokenRecord]]:
    """The records, under an exclusive lock against a concurrent ``xinfang token``; written back
    atomically (a temporary file renamed over the store, 0600) when the block ends without error."""
    _private_parent(path)
    with os.fdopen(os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = _parse(path.read_text(encoding="utf-8")) if path.exists() else []
        before = [r.to_json() for r in records]
        yield records
        if [r.to_json() for r in records] != before:
            _write(path, records)


def _private_parent(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)


def _write(path: Path, records: list[TokenRecord]) -> None:
    from shared.secrets import replace_private

    replace_private(path, json.dumps({"version": 1, "tokens": [r.to_json() for r in records]},
                                     ensure_ascii=False, indent=1) + "\n")


def check_binding(roles: list[str], staff_id: str | None, unit: str | None, agent_id: str | None,
                  leader_id: str | None, directory=None) -> None:  # noqa: ANN001 - a shared.directory.Directory
    """What each role must be bound to, and nothing else; ids checked against the directory."""
    if not roles:
        raise TokenError("a token needs a role")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise TokenError(f"unknown role {unknown[0]!r}; the roles are {', '.join(ROLES)}")
    if len(set(roles)) != len(roles):
        raise TokenError("a role is named twice")
    if len(roles) > 1 and SCOPED & set(roles):
        raise TokenError(f"a {'/'.join(sorted(SCOPED & set(roles)))} token carries that role alone")
    given = {"staff": staff_id, "unit": unit, "agent": agent_id, "leader": leader_id}
    needed = {BINDING[r] for r in roles} - {None}
    for what in needed:
        if not given[what]:
            raise TokenError(f"a {'/'.join(r for r in roles if BINDING[r] == what)} token needs --{what}")
    extra = [w for w, v in given.items() if v and w not in needed]
    if extra:
        raise TokenError(f"--{extra[0]} does not apply to a {'+'.join(roles)} token")
    if staff_id and not STAFF_ID.match(staff_id):
        raise TokenError("a staff id is 1-64 letters, digits, '_', '.' or '-'")
    if directory is not None:
        if unit and unit not in directory.units:
            raise TokenError(f"unknown unit {unit!r} (see GET /api/v1/directory)")
        if agent_id and agent_id not in directory.agents:
            raise TokenError(f"unknown agent {agent_id!r} (see GET /api/v1/directory/agents)")
        if leader_id and leader_id not in directory.leaders:
            raise TokenError(f"unknown leader {leader_id!r} (leaders.yaml)")


def create(settings: Settings, roles: list[str] | str, *, staff_id: str | None = None, unit: str | None = None,
           agent_id: str | None = None, leader_id: str | None = None, note: str = "",
           directory=None) -> tuple[TokenRecord, str]:  # noqa: ANN001
    """A new token: its record and the secret, which is shown once and never stored."""
    roles = [roles] if isinstance(roles, str) else list(roles)
    if directory is None and (unit or agent_id or leader_id):  # ids to check against the directory
        from shared.directory import load_directory
        directory = load_directory(settings.config_dir)
    check_binding(roles, staff_id, unit, agent_id, leader_id, directory)
    secret = "xf_" + secrets.token_urlsafe(32)
    with _locked(store_path(settings)) as records:
        ids = {r.id for r in records}
        token_id = "tk-" + secrets.token_hex(4)
        while token_id in ids:
            token_id = "tk-" + secrets.token_hex(4)
        record = TokenRecord(id=token_id, sha256=digest(secret), roles=roles,
                             created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             staff_id=staff_id, unit=unit, agent_id=agent_id, leader_id=leader_id, note=note)
        records.append(record)
    return record, secret


def revoke(settings: Settings, token_id: str) -> TokenRecord:
    with _locked(store_path(settings)) as records:
        for r in records:
            if r.id == token_id:
                if r.revoked_at is None:
                    r.revoked_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
                return r
    raise TokenError(f"no token {token_id}")


def listed(settings: Settings) -> list[TokenRecord]:
    path = store_path(settings)
    return _parse(path.read_text(encoding="utf-8")) if path.exists() else []


# --- the embedded run's first start ----------------------------------------------------------

def ensure(settings: Settings) -> list[str]:
    """The embedded run's first start: a clerk and a supervisor token, written to
    ``<data_dir>/secrets/first-tokens.txt`` (0600); lines saying where, never the tokens."""
    from shared.secrets import secrets_dir, write_private

    first = secrets_dir(settings) / FIRST_TOKENS
    if not store_path(settings).exists():
        _, clerk = create(settings, "clerk", staff_id="clerk1", note="first start: the intake desk")
        _, supervisor = create(settings, "supervisor", staff_id="office1", note="first start: the supervision office")
        write_private(first, f"clerk: {clerk}\nsupervisor: {supervisor}\n")
        return [f"API tokens: a clerk and a supervisor token were made for this first start, in {first} "
                "(only you can read it); `xinfang token create --role …` makes more"]
    return []  # a later start: `xinfang up`'s summary says where they are (``where``)


def where(settings: Settings) -> str:
    """One line for ``xinfang up``'s summary: where the first tokens are, or the store."""
    from shared.secrets import secrets_dir

    first = secrets_dir(settings) / FIRST_TOKENS
    if first.exists():
        return f"{first} (the first clerk's and supervisor's; `xinfang token list` lists all)"
    if not store_path(settings).exists():
        return f"none yet: make them with `xinfang token create --role …` (stored in {store_path(settings)})"
    return f"{store_path(settings)} (`xinfang token list`, `xinfang token create --role …`)"
