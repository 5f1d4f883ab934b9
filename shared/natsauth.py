"""NATS users and their permissions, generated from the directory (DESIGN §9; README, "NATS users").

Without them any client reads every unit's cases, publishes any event, acks other consumers'
messages and can delete the stream. With them the server refuses an anonymous connection, and:

- ``admin`` may do everything; it alone may create, update, purge or delete streams (``xinfang up``
  and the tests declare the streams as admin before the services start);
- ``svc_<service>`` publishes the subjects of the events its service publishes (``published_by`` in
  ``shared/events.py``), the refusals (``cases.refused.*``) and its own dead letters, uses its own
  durable consumer (named after the service), and answers the request subjects it serves;
- ``ops`` reads (``xinfang tail``): stream and consumer INFO, stored messages by sequence
  (``STREAM.MSG.GET``), subscriptions to the stored subjects; it publishes no event, creates no
  consumer and acks nothing (a consumer created on the unnamed ephemeral subject may carry the name
  of an existing durable and so rewrite it: nats-server 2.15 updates ``unit_<code>``'s filter so);
- ``unit_<code>``, one per unit of the directory, publishes only its own department events
  (``cases.<verb>.<code>``), requests only ``routing.assignment.<code>`` and ``timeline.<code>``,
  receives only on ``cases.*.<code>`` and its own inbox prefix ``_INBOX_<code>`` (its client must
  connect with that prefix), and on the JetStream API may only read the stream's INFO, create (with
  its filter pinned in the request subject), read and pull its own consumer ``unit_<code>`` and ack
  its messages.

Passwords are random; the server keeps bcrypt hashes only (``auth.conf``). Each user's credentials
are a small JSON file ``{"user", "password", "inbox_prefix"}`` (plus ``"tls_ca"`` when given), mode
0600, in ``<data_dir>/secrets/nats/`` for the embedded run or in the folder ``xinfang nats-config
--out`` names for an external server.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared import events as ev
from shared import subjects
from shared.secrets import private_dir, secrets_dir, write_private
from shared.settings import SERVICES, Settings

ADMIN, OPS = "admin", "ops"
AUTH_CONF = "auth.conf"
HASHES = "hashes.json"  # user → bcrypt hash (and a SHA-256 of the password, to notice a new one)
BCRYPT_COST = 11  # what `nats server passwd` uses; the passwords are 256-bit random anyway
API = "$JS.API"
# The request subjects each service answers (core request-reply; shared/bus.py Responder).
ANSWERS: dict[str, tuple[str, ...]] = {"routing": (subjects.ASSIGNMENT_QUERY,),
                                        "supervision": (subjects.TIMELINE_QUERY, subjects.RESIDENT_STEP_QUERY)}
# The requests a service sends to another (core NATS request-reply).
ASKS: dict[str, tuple[str, ...]] = {"intake": (subjects.RESIDENT_STEP_QUERY,)}
# scoring's rebuild (`xinfang scoring rebuild`) replays the stream through a consumer of this name.
REBUILD_CONSUMER = "scoring_rebuild"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def service_user(service: str) -> str:
    return f"svc_{service}"


def unit_user(code: str) -> str:
    return f"unit_{code}"


def unit_consumer(code: str) -> str:
    """The durable consumer of a unit on the case stream: its name is also the unit's user name."""
    return f"unit_{code}"


def inbox_prefix(user: str) -> str:
    """``_INBOX_<code>`` for a unit, ``_INBOX_<user>`` for the others: no user shares another's replies."""
    return f"_INBOX_{user.removeprefix('unit_')}"


@dataclass(frozen=True)
class User:
    name: str
    inbox_prefix: str
    permissions: dict | None  # None: everything (admin)


def _allow(publish: Iterable[str], subscribe: Iterable[str], responses: bool) -> dict:
    perms: dict = {"publish": {"allow": sorted(set(publish))}, "subscribe": {"allow": sorted(set(subscribe))}}
    if responses:
        perms["allow_responses"] = True
    return perms


def _acks(stream: str, consumer: str) -> list[str]:
    """The ack subjects of a consumer's messages: ``$JS.ACK.<stream>.<consumer>.…`` (what nats-server
    sends today) and the longer form with domain and account hash before the stream."""
    return [f"$JS.ACK.{stream}.{consumer}.>", f"$JS.ACK.*.*.{stream}.{consumer}.>"]


def _consumer_api(stream: str, consumer: str, *, delete: bool = False) -> list[str]:
    """A service's own consumer: INFO, CREATE/update under its name (the server refuses a config
    naming another), pulls (MSG.NEXT) and acks of the messages it delivers."""
    out = [f"{API}.CONSUMER.INFO.{stream}.{consumer}", f"{API}.CONSUMER.CREATE.{stream}.{consumer}",
           f"{API}.CONSUMER.CREATE.{stream}.{consumer}.>", f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
           f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", *_acks(stream, consumer)]
    return out + ([f"{API}.CONSUMER.DELETE.{stream}.{consumer}"] if delete else [])


def service_permissions(service: str, stream: str) -> dict:
    user = service_user(service)
    events = {subjects.wildcard(c.subject_template) for c in ev.EVENT_TYPES.values() 
              if c.published_by == service or service in c.relayed_by}
    publish = [*events, *ASKS.get(service, ()), subjects.wildcard(subjects.REFUSED),
               subjects.DEAD_LETTER.format(service=service),
               f"{API}.STREAM.INFO.{stream}", f"{API}.STREAM.INFO.{subjects.DEAD_LETTER_STREAM}",
               *_consumer_api(stream, service)]
    if service == "scoring":
        publish += _consumer_api(stream, REBUILD_CONSUMER, delete=True)
    subscribe = [f"{inbox_prefix(user)}.>", *(subjects.wildcard(t) for t in ANSWERS.get(service, ()))]
    return _allow(publish, subscribe, responses=True)  # replies to the requests it answers


def ops_permissions(stream: str) -> dict:
    """Read-only: INFO of anything, stored messages by sequence, subscriptions to the stored subjects.
    No consumer of its own: see the module's docstring."""
    publish = [f"{API}.INFO", f"{API}.STREAM.INFO.*", f"{API}.STREAM.NAMES", f"{API}.STREAM.LIST",
               f"{API}.STREAM.MSG.GET.*", f"{API}.CONSUMER.INFO.*.*", f"{API}.CONSUMER.NAMES.*",
               f"{API}.CONSUMER.LIST.*"]
    subscribe = [f"{inbox_prefix(OPS)}.>", *subjects.STREAM_SUBJECTS, *subjects.DEAD_LETTER_SUBJECTS]
    return _allow(publish, subscribe, responses=False)


def unit_permissions(code: str, stream: str) -> dict:
    consumer = unit_consumer(code)
    publish = [*(c.subject_template.format(unit=code) for c in ev.DEPARTMENT_EVENTS),
               subjects.ASSIGNMENT_QUERY.format(unit=code), subjects.TIMELINE_QUERY.format(unit=code),
               f"{API}.STREAM.INFO.{stream}", f"{API}.CONSUMER.INFO.{stream}.{consumer}",
               # The filter is part of the subject, and the server refuses a request whose config
               # names another: the unit cannot widen what its consumer reads.
               f"{API}.CONSUMER.CREATE.{stream}.{consumer}.{subjects.for_unit(code)}",
               f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", *_acks(stream, consumer)]
    subscribe = [f"{inbox_prefix(unit_user(code))}.>", subjects.for_unit(code)]
    return _allow(publish, subscribe, responses=False)


def users(settings: Settings) -> list[User]:
    """Every user the deployment has: admin, ops, a user per service and one per unit of the directory."""
    from shared.directory import ConfigError, load_directory

    stream = settings.stream_name
    if not _TOKEN.match(stream):
        raise ConfigError(f"XF_STREAM_NAME {stream!r}: letters, digits, '_' and '-' only")
    out = [User(ADMIN, inbox_prefix(ADMIN), None), User(OPS, inbox_prefix(OPS), ops_permissions(stream))]
    out += [User(service_user(s), inbox_prefix(service_user(s)), service_permissions(s, stream)) for s in SERVICES]
    for code in load_directory(settings.config_dir).units:
        if not _TOKEN.match(code):
            raise ConfigError(f"unit code {code!r} cannot name a NATS user or subject token: "
                              "letters, digits, '_' and '-' only")
        out.append(User(unit_user(code), inbox_prefix(unit_user(code)), unit_permissions(code, stream)))
    return out


# --- files --------------------------------------------------------------------------------------

def creds_dir(settings: Settings) -> Path:
    return secrets_dir(settings) / "nats"


def creds_path(settings: Settings, user: str) -> Path:
    return creds_dir(settings) / f"{user}.json"


def auth_conf_path(settings: Settings) -> Path:
    return creds_dir(settings) / AUTH_CONF


def read_creds(path: Path) -> dict:
    try:
        creds = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"NATS credentials {path} do not exist") from None
    except ValueError as exc:
        raise ValueError(f"NATS credentials {path}: not JSON ({exc})") from None
    missing = [k for k in ("user", "password") if not isinstance(creds.get(k), str) or not creds.get(k)]
    if missing:
        raise ValueError(f"NATS credentials {path}: missing {', '.join(missing)}")
    return creds


def _sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _bcrypt(password: str) -> str:
    import bcrypt

    # $2a$: the prefix every nats-server version reads.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")).decode()


def generate(settings: Settings, out: Path | None = None, tls_ca: Path | None = None) -> list[str]:
    """Write (into ``out``, default ``<data_dir>/secrets/nats``) a credentials file per user that lacks
    one, keeping existing passwords, and ``auth.conf`` for every user of the directory as it is now.
    Returns lines for the operator: what was added or dropped (none when nothing changed)."""
    folder = private_dir(Path(out) if out is not None else creds_dir(settings))
    wanted = users(settings)
    index_path = folder / HASHES
    index: dict = json.loads(index_path.read_text()) if index_path.exists() else {}
    created, todo = [], {}
    for user in wanted:
        path = folder / f"{user.name}.json"
        if path.exists():
            creds = read_creds(path)
            if tls_ca is not None and creds.get("tls_ca") != str(tls_ca):
                write_private(path, json.dumps({**creds, "tls_ca": str(tls_ca)}, indent=2) + "\n")
        else:
            creds = {"user": user.name, "password": secrets.token_urlsafe(32), "inbox_prefix": user.inbox_prefix}
            if tls_ca is not None:
                creds["tls_ca"] = str(tls_ca)
            write_private(path, json.dumps(creds, indent=2) + "\n")
            created.append(user.name)
        if index.get(user.name, {}).get("sha256") != _sha(creds["password"]):
            todo[user.name] = creds["password"]
    if todo:  # bcrypt is slow on purpose; it releases the GIL, so hash on every core
        with ThreadPoolExecutor() as pool:
            for name, hashed in zip(todo, pool.map(_bcrypt, todo.values())):
                index[name] = {"bcrypt": hashed, "sha256": _sha(todo[name])}
    names = {u.name for u in wanted}
    dropped = sorted(set(index) - names)
    index = {k: v for k, v in index.items() if k in names}
    write_private(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_private(folder / AUTH_CONF, render_auth_conf(wanted, {k: v["bcrypt"] for k, v in index.items()}))
    lines = []
    if created:
        shown = ", ".join(created) if len(created) <= 8 else f"{', '.join(created[:6])}, … ({len(created)} in all)"
        lines.append(f"NATS users created: {shown}; credentials in {folder} (one JSON file each, mode 0600)")
    if dropped:
        lines.append(f"NATS users no longer in the directory, removed from {AUTH_CONF}: {', '.join(dropped)}")
    return lines


def render_auth_conf(wanted: list[User], hashes: dict[str, str]) -> str:
    """The server's ``authorization {}`` block: every user with its bcrypt hash and permissions. No
    ``no_auth_user``: a connection without a user is refused."""
    rows = []
    for user in wanted:
        entry: dict = {"user": user.name, "password": hashes[user.name]}
        if user.permissions is not None:
            entry["permissions"] = user.permissions
        rows.append("    " + json.dumps(entry, ensure_ascii=False))
    return ("# Generated by xinfang (shared/natsauth.py) from the directory; `xinfang nats-config` rewrites it.\n"
            "# Passwords are bcrypt hashes; each user's password is in its own <user>.json beside this file.\n"
            "authorization {\n  users = [\n" + "\n".join(rows) + "\n  ]\n}\n")


def ensure(settings: Settings) -> list[str]:
    """The embedded run's start: generate what is missing (users of units added to the directory
    since included, existing passwords kept); lines saying what and where."""
    return generate(settings)


# --- connecting ---------------------------------------------------------------------------------

def file_options(path: Path | None) -> dict:
    """nats.connect keyword arguments from a credentials file: user, password, inbox_prefix, and a
    TLS context trusting ``tls_ca`` when it names one. None: no options (an anonymous connection)."""
    if path is None:
        return {}
    creds = read_creds(path)
    opts = {"user": creds["user"], "password": creds["password"]}
    if creds.get("inbox_prefix"):
        opts["inbox_prefix"] = creds["inbox_prefix"]
    if creds.get("tls_ca"):
        opts["tls"] = tls_context(Path(creds["tls_ca"]))
    return opts


def tls_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def creds_for(settings: Settings, default_user: str | None) -> Path | None:
    """This process's credentials: XF_NATS_CREDS, else ``<data_dir>/secrets/nats/<default_user>.json``
    when the embedded run generated it, else none."""
    if settings.nats_creds is not None:
        return settings.nats_creds
    if default_user is not None and creds_path(settings, default_user).exists():
        return creds_path(settings, default_user)
    return None


def connect_options(settings: Settings, default_user: str | None = None, creds: Path | None = None) -> dict:
    """nats.connect keyword arguments of this process: ``creds`` (a command's --creds), else
    XF_NATS_CREDS, else the embedded run's file for ``default_user``; TLS from XF_NATS_TLS_CA /
    _CERT / _KEY (or the file's ``tls_ca``)."""
    opts = file_options(creds or creds_for(settings, default_user))
    if settings.nats_tls_ca or settings.nats_tls_cert:
        opts["tls"] = tls_context(settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key)
    return opts
