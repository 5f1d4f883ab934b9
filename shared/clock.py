"""An injectable clock, so tests and the demo can move time (DESIGN §4: sweeps on a clock)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ClockError(ValueError):
    """A manual clock was told to go back in time: refused, the clock is unchanged."""


class ManualClock:
    """A clock that only moves when told to, and only forward (what it stamped stays in the past);
    thread-safe because HTTP handlers run in a pool."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ClockError(f"a clock never moves backwards: cannot advance by {delta}")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        """Move the clock to ``when``: the same time or later, never earlier (:class:`ClockError`)."""
        if when.tzinfo is None:
            raise ClockError("ManualClock needs an aware datetime")
        when = when.astimezone(timezone.utc)
        with self._lock:
            if when < self._now:
                raise ClockError(f"a clock never moves backwards: {when.isoformat()} is before its current time "
                                 f"{self._now.isoformat()}")
            self._now = when
