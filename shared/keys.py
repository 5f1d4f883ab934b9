"""The keys of the keyed hashes (DESIGN §9): there is no default key in the code.

Two keys, each kept as a ring of ids so it can be rotated:

- **id_hash** — HMAC-SHA256 of a resident's ID number (``resident_id_hash`` in intake's ``cases``,
  ``resident.id_hash`` on ``CaseReceived``): links a resident's cases (repeat petitions). With a known
  key, a masked ID (region and last four shown, 8 digits of birth date hidden) plus its hash gives the
  full number back in a few thousand tries, so the key is a secret of the deployment;
- **query_code** — HMAC-SHA256 of a resident's query code (``query_code_hash`` in intake's ``cases``
  and on ``CaseReceived``, which supervision keeps for the progress lookup); and, derived from it, the
  AES-GCM key that seals the query codes inside intake's stored idempotent answers.

Where a key comes from, for each kind on its own: ``XF_ID_HASH_KEY`` / ``XF_QUERY_CODE_KEY``, else
``<data_dir>/secrets/keys.json`` (0600), which ``xinfang up`` writes on the embedded run's first
start (:func:`ensure`) and ``xinfang keys init`` writes on demand. A service that hashes (intake,
supervision) refuses to start without both (:class:`KeysError`, saying how to set them).

**Rotation** (``xinfang keys rotate``): a new key becomes current, the old ones are kept with their
ids. New hashes use the current key; a hash is checked against every kept key, so a case hashed under
an old key is still found (repeat detection looks up the ID's hash under every kept key). Hashes
carry no key id (their format never changed: 64 hex characters); sealed answers carry the id of the
query-code key that sealed them. In the environment a ring is written ``id:secret,id:secret`` with the
current key first; a bare value is one key with the id ``env``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets as pysecrets
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from shared.privacy import keyed_hash
from shared.settings import Settings

# kind → (environment variable, Settings attribute, what it is)
KINDS: dict[str, tuple[str, str, str]] = {
    "id_hash": ("XF_ID_HASH_KEY", "id_hash_key", "resident-ID hash key"),
    "query_code": ("XF_QUERY_CODE_KEY", "query_code_key", "query-code key"),
}
SERVICES = ("intake", "supervision")  # the services that hash, and so need the keys
MIN_LENGTH = 32  # characters of a current key; old keys are kept as they were
FILE_FORMAT = 1
_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_ENV_RING = re.compile(r"^[A-Za-z0-9_-]{1,32}:[^,]+(,[A-Za-z0-9_-]{1,32}:[^,]+)*$")
_SEAL_PREFIX = "sealed:v1:"


class KeysError(Exception):
    """Keys missing, too weak, or a keys file that is wrong; the message says what to do."""


def keys_file(settings: Settings) -> Path:
    return settings.data_dir / "secrets" / "keys.json"


@dataclass(frozen=True)
class KeyRing:
    """One kind of key: the current one (first) and the old ones kept for checking."""

    kind: str
    entries: tuple[tuple[str, str], ...]  # (id, secret), the current key first

    def __repr__(self) -> str:  # never print a secret
        return f"KeyRing({self.kind}, current={self.current!r}, ids={self.ids!r})"

    @property
    def current(self) -> str:
        return self.entries[0][0]

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.entries]

    def secret(self, key_id: str) -> str | None:
        return next((s for i, s in self.entries if i == key_id), None)

    def hash(self, value: str) -> str:
        """The hash of ``value`` under the current key: what is stored and published."""
        return keyed_hash(self.entries[0][1], value)

    def hashes(self, value: str) -> list[str]:
        """The hash of ``value`` under every kept key, the current one first: what to look up."""
        return [keyed_hash(s, value) for _, s in self.entries]

    def matches(self, value: str, expected: str | None) -> bool:
        """Constant-time per key, and every key is tried (no early exit): does ``value`` hash to ``expected``?"""
        found = False
        for h in self.hashes(value):  # the same work whether or not there is a hash to compare
            found |= hmac.compare_digest(h, expected or "0" * len(h))
        return found and expected is not None


@dataclass(frozen=True)
class Keys:
    """Both rings, resolved in one place (:func:`load`) for every service that hashes."""

    id_hash: KeyRing
    query_code: KeyRing
    source: str = ""

    # --- query codes sealed in stored answers (AES-256-GCM) ------------------------------------

    @staticmethod
    def _aead(secret: str):  # noqa: ANN205
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(hmac.new(secret.encode(), b"xinfang/sealed-answer/v1", hashlib.sha256).digest())

    def seal(self, plaintext: str, context: str) -> str:
        """``plaintext`` encrypted under the current query-code key, bound to ``context`` (its row)."""
        nonce = os.urandom(12)
        box = self._aead(self.query_code.entries[0][1]).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_SEAL_PREFIX}{self.query_code.current}:{base64.urlsafe_b64encode(nonce + box).decode()}"

    def unseal(self, sealed: str, context: str) -> str:
        """The plaintext of :meth:`seal`; a value that is not sealed (written before sealing) as it is."""
        if not sealed.startswith(_SEAL_PREFIX):
            return sealed
        from cryptography.exceptions import InvalidTag

        key_id, blob = sealed[len(_SEAL_PREFIX):].split(":", 1)
        raw = base64.urlsafe_b64decode(blob)
        named = self.query_code.secret(key_id)
        for secret in ([named] if named else []) + [s for i, s in self.query_code.entries if i != key_id]:
            try:
                return self._aead(secret).decrypt(raw[:12], raw[12:], context.encode()).decode()
            except InvalidTag:
                continue
        raise KeysError(f"a sealed answer (query-code key {key_id!r}) opens under no kept query-code key")


# --- where keys come from --------------------------------------------------------------------------

def load(settings: Settings) -> Keys:
    """Both keys from the environment, else the keys file; :class:`KeysError` saying how to set them."""
    path = keys_file(settings)
    data = _read(path) if path.exists() else None
    rings, missing, sources = {}, [], []
    for kind, (env, attr, _what) in KINDS.items():
        value = getattr(settings, attr)
        if value is not None:
            rings[kind] = _env_ring(kind, value.get_secret_value())
            sources.append(env)
        elif data is not None and kind in data:
            rings[kind] = _file_ring(kind, data[kind], path)
            sources.append(str(path))
        else:
            missing.append(kind)
    if missing:
        raise KeysError(missing_message(settings, missing))
    return Keys(rings["id_hash"], rings["query_code"], source=", ".join(dict.fromkeys(sources)))


def missing_message(settings: Settings, missing: list[str]) -> str:
    path = keys_file(settings)
    names = " and no ".join(KINDS[k][2] for k in missing)
    envs = " and ".join(KINDS[k][0] for k in missing)
    return (f"no {names}: there is no default key. Set {envs} (at least {MIN_LENGTH} characters each, e.g. "
            f"`xinfang keys init --print`; the same values for every intake and supervision process), or run "
            f"`xinfang keys init` to generate {path} (0600, read by every process with XF_DATA_DIR="
            f"{settings.data_dir}). The embedded run (`xinfang up` without XF_NATS_URL) generates that file on "
            f"its first start.")


def _env_ring(kind: str, value: str) -> KeyRing:
    env = KINDS[kind][0]
    value = value.strip()
    if _ENV_RING.match(value):
        entries = tuple(tuple(part.split(":", 1)) for part in value.split(","))
    else:
        entries = (("env", value),)
    return _checked(kind, entries, env)  # type: ignore[arg-type]


def _file_ring(kind: str, section: object, path: Path) -> KeyRing:
    try:
        current = section["current"]  # type: ignore[index]
        by_id = {e["id"]: e["secret"] for e in section["keys"]}  # type: ignore[index]
        entries = ((current, by_id[current]),) + tuple((i, s) for i, s in by_id.items() if i != current)
    except (KeyError, TypeError) as exc:
        raise KeysError(f"{path}: {kind}: needs 'current' and 'keys' [{{'id', 'secret'}}, …] ({exc})") from None
    return _checked(kind, entries, str(path))


def _checked(kind: str, entries: tuple[tuple[str, str], ...], where: str) -> KeyRing:
    ids = [i for i, _ in entries]
    if len(set(ids)) != len(ids) or not all(_ID.match(i) for i in ids):
        raise KeysError(f"{where}: {kind} key ids must be distinct, 1-32 of A-Z a-z 0-9 _ -: {ids}")
    if len(entries[0][1]) < MIN_LENGTH:
        raise KeysError(f"{where}: the current {KINDS[kind][2]} ({entries[0][0]!r}) is shorter than {MIN_LENGTH} "
                        f"characters; generate one with `xinfang keys init --print`")
    if any(not s for _, s in entries):
        raise KeysError(f"{where}: an empty {kind} key")
    return KeyRing(kind, entries)


def _read(path: Path) -> dict:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeysError(f"{path} may be read by others (mode {stat.S_IMODE(mode):o}): `chmod 600 {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: not a keys file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise KeysError(f"{path}: not a keys file of format {FILE_FORMAT}")
    return data


# --- generating and rotating (the keys file) ------------------------------------------------------

def new_secret() -> str:
    return pysecrets.token_bytes(32).hex()  # 256 bits, 64 hex characters


def _entry(key_id: str) -> dict:
    return {"id": key_id, "secret": new_secret(), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _write(path: Path, data: dict) -> None:
    from shared.secrets import write_private

    write_private(path, json.dumps(data, indent=2) + "\n")  # atomic: never a half-written keys file


def ensure(settings: Settings) -> list[str]:
    """The embedded run's first start: generate what is missing; lines saying what and where.

    A kind given in the environment is left alone; one already in the file is kept as it is."""
    path = keys_file(settings)
    data = _read(path) if path.exists() else {"format": FILE_FORMAT}
    made = []
    for kind, (_env, attr, what) in KINDS.items():
        if getattr(settings, attr) is None and kind not in data:
            data[kind] = {"current": "k1", "keys": [_entry("k1")]}
            made.append(what)
    if not made:
        return []
    _write(path, data)
    return [f"keys: generated the {' and the '.join(made)} in {path} (0600). Back it up with the databases: without it "
            f"residents' earlier cases are no longer linked and their query codes no longer check."]


def init(settings: Settings) -> list[str]:
    """``xinfang keys init``: the keys file, generated where it is missing (nothing is replaced)."""
    lines = ensure(settings)
    return lines or [f"keys: {keys_file(settings)} already holds both keys (nothing changed; "
                     f"`xinfang keys rotate` adds new ones)"]


def env_lines() -> list[str]:
    """``xinfang keys init --print``: fresh keys as environment settings, for an external deployment."""
    return [f"{env}=k1:{new_secret()}" for env, _attr, _what in KINDS.values()]


def rotate(settings: Settings, kinds: list[str]) -> list[str]:
    """``xinfang keys rotate``: a new current key of each kind in the file; the old ones are kept."""
    path = keys_file(settings)
    if not path.exists():
        raise KeysError(f"no keys file at {path}: `xinfang keys init` first")
    data = _read(path)
    lines = []
    for kind in kinds:
        env, attr, what = KINDS[kind]
        if getattr(settings, attr) is not None:
            raise KeysError(f"the {what} comes from {env}, not the file: rotate it there, as "
                            f"{env}=<new id>:<new key>,<old id>:<old key> (the current key first)")
        if kind not in data:
            raise KeysError(f"{path} has no {what}: `xinfang keys init` first")
        ring = _file_ring(kind, data[kind], path)
        numbers = [int(i[1:]) for i in ring.ids if re.fullmatch(r"k\d+", i)]
        new_id = f"k{max(numbers, default=0) + 1}"
        data[kind]["keys"].append(_entry(new_id))
        data[kind]["current"] = new_id
        lines.append(f"keys: the {what} is now {new_id}; kept {', '.join(ring.ids)} to check older hashes")
    _write(path, data)
    return lines + ["restart intake and supervision (every replica) to use the new keys"]


def describe(settings: Settings) -> list[str]:
    """``xinfang keys show``: where each key comes from and its ids, never a secret."""
    keys = load(settings)
    return [f"{KINDS[r.kind][2]}: current {r.current}, kept {', '.join(r.ids)}" for r in (keys.id_hash, keys.query_code)
            ] + [f"from {keys.source}"]
