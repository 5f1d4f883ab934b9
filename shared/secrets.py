"""Secrets of a deployment, never defaults in the code (DESIGN §9; README, "Security").

The embedded run (``xinfang up`` without ``XF_NATS_URL``) generates on first start what is missing
into ``<data_dir>/secrets/`` (a folder only its owner may read): the keys of the keyed hashes
(``shared/keys.py``), the NATS users and their credentials (``shared/natsauth.py``) and the first API
tokens (``shared/tokens.py``). A deployment against external NATS or PostgreSQL brings its own and
refuses to start without them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.settings import Settings


def secrets_dir(settings: Settings) -> Path:
    return settings.data_dir / "secrets"


def private_dir(path: Path) -> Path:
    """A folder only the owner may enter (0700), created if missing."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> Path:
    """A file only the owner may read (0600), in a folder only the owner may enter."""
    private_dir(path.parent)
    return replace_private(path, text)


def replace_private(path: Path, text: str) -> Path:
    """Write ``path`` (0600) atomically in its existing folder: a temporary file, created 0600,
    flushed to disk and renamed over it, so the file never exists half-written or with wider rights."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_embedded(settings: Settings) -> list[str]:
    """First start of the embedded run: generate what is missing; lines that say what and where."""
    from shared import keys, natsauth, tokens

    return [*keys.ensure(settings), *natsauth.ensure(settings), *tokens.ensure(settings)]
