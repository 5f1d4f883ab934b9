"""Limits on guessing a resident's query code (the resident's routes, which take no token).

A wrong code (or a case number that does not exist: the two answer alike) is a row in the service's
``resident_failures`` table, once for the case number and once for the client. Past
``XF_RESIDENT_CASE_FAILURES`` (10) rows for the case, or ``XF_RESIDENT_CLIENT_FAILURES`` (30) for the
client, within the last hour, every request on that case (or from that client) answers ``429`` with
``Retry-After`` — even with the right code, or the limit would tell a guesser when it guessed right.
The rows live in the service's database, so replicas share the limits; intake and supervision count
separately (README, "The resident's routes"). Client addresses are stored as keyed hashes and rows
older than the window are deleted as new ones come.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, MetaData, String, Table, delete, select

from shared.db import UtcDateTime
from shared.errors import TooManyAttempts

WINDOW = timedelta(hours=1)


def failures_table(metadata: MetaData) -> Table:
    return Table(
        "resident_failures", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("scope", String(8), nullable=False),  # case | client
        Column("subject", String(64), nullable=False),  # the case number, or the client's keyed hash
        Column("at", UtcDateTime(), nullable=False),
        Index("ix_resident_failures_subject", "scope", "subject", "at"),
        Index("ix_resident_failures_at", "at"),
    )


@dataclass(frozen=True)
class ResidentLimits:
    table: Table
    per_case: int
    per_client: int
    window: timedelta = WINDOW

    def check(self, conn: Connection, now: datetime, case: str, client: str) -> None:
        """:class:`TooManyAttempts` when the case or the client is past its limit; else nothing."""
        t, since = self.table, now - self.window
        for scope, subject, limit in (("case", case, self.per_case), ("client", client, self.per_client)):
            times = list(conn.execute(select(t.c.at).where(t.c.scope == scope, t.c.subject == subject, t.c.at > since)
                                      .order_by(t.c.at)).scalars())
            if len(times) >= limit:
                # Free again when enough of these failures have left the window.
                wait = times[len(times) - limit] + self.window - now
                seconds = max(1, math.ceil(wait.total_seconds()))
                what = "this case number" if scope == "case" else "this address"
                raise TooManyAttempts(f"too many wrong query codes for {what}; try again in {seconds} s",
                                      seconds)

    def record(self, conn: Connection, now: datetime, case: str, client: str) -> None:
        """A wrong code (or no such case): one row for the case, one for the client; old rows go."""
        t = self.table
        conn.execute(delete(t).where(t.c.at <= now - self.window))
        conn.execute(t.insert(), [{"scope": "case", "subject": case[:64], "at": now},
                                  {"scope": "client", "subject": client[:64], "at": now}])


# The resident's routes' error answers, for their OpenAPI description.
RESIDENT_ERRORS: dict = {
    404: {"description": "No such case, or a wrong query code: one answer for both (counted toward the limits)"},
    429: {"description": "Too many wrong codes for this case number or from this address within the hour; "
                         "`Retry-After` says when to try again (body: error too_many_attempts, retry_after)"},
}
