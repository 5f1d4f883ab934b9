"""Keyed hashes: how a resident's ID number or query code is compared across services without
the value itself leaving intake (DESIGN §9). The keys, and which hash takes which, are in
``shared/keys.py`` (there is no default key)."""
from __future__ import annotations

import hashlib
import hmac


def keyed_hash(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()
