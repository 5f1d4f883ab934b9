"""``xinfang scoring rebuild`` and ``xinfang report``."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

from services.scoring.app import build_scoring
from services.scoring.handlers import rebuild as replay
from services.scoring.service import ScoringMetrics
from shared.db import UnitOfWork, make_engine, migrate
from shared.settings import Settings


def rebuild(settings: Settings) -> int:
    """Replays the stream into scoring's database; stop the scoring service while it runs."""
    url = settings.db_url("scoring")
    migrate("scoring", url)
    engine = make_engine(url)
    scoring = build_scoring(settings, UnitOfWork(engine), ScoringMetrics())
    started = time.monotonic()
    result = asyncio.run(replay(scoring, settings))
    elapsed = time.monotonic() - started
    print(f"rebuilt from {result['stream_last_seq']} stored events: {result['applied']} applied, "
          f"{result['skipped']} skipped (undecodable, forged or naming unknown codes), "
          f"{result['refused']} refused (a second receipt), {elapsed:.1f} s "
          f"({result['stream_last_seq'] / elapsed if elapsed else 0:.0f} events/s)")
    engine.dispose()
    return 0


def report(base_url: str, period: str, fmt: str, out: Path | None, token: str | None = None) -> int:
    path = f"/api/v1/reports/{period}" + ("" if fmt == "json" else f"/report.{fmt}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(base_url + path, timeout=120, headers=headers)
    if answer.status_code in (401, 403):
        print(f"scoring answered {answer.status_code}: {answer.json().get('message', answer.text)}; "
              "give a clerk's, supervisor's or leader's token with --token or XF_TOKEN", file=sys.stderr)
        return 2
    if answer.status_code != 200:
        print(f"scoring answered {answer.status_code}: {answer.text}", file=sys.stderr)
        return 2
    if out is not None:
        out.write_bytes(answer.content)
        print(f"written to {out}")
    elif fmt in ("xlsx", "docx"):
        print(f"{fmt} needs --out FILE", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(answer.text)
    return 0
