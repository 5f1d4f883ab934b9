"""The deadline policy (DESIGN §4), loaded from ``deploy/config/deadlines.yaml``, and the calendar
that counts its days: calendar days, or working days with China's official holidays and make-up
working days (调休) from the ``holidays`` package."""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from time import monotonic as time_now
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.directory import ConfigDoc

log = logging.getLogger(__name__)
CHINA_TZ = timezone(timedelta(hours=8))
Days = Field(gt=0, le=365)
Mode = Literal["calendar_days", "working_days"]


class DeadlinePolicy(BaseModel):
    """How due dates are counted (期间的计算). One date function serves both modes:

    - ``calendar_days``: N days after the start's day; a last day that falls on a rest day or an
      official holiday moves to the next working day when ``roll_to_working_day`` (on by default: a
      time limit never ends inside the Spring Festival or on a Sunday);
    - ``working_days``: the N-th working day after the start's day (official holidays skipped,
      make-up working days 调休 counted). An extension adds working days too.

    Reminders and escalations count in the same mode: in ``working_days`` a reminder comes at the
    start of a working day and an escalation after whole working days. Internal timings (the
    feedback window, archiving) are not rolled: they bind no one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    calendar: Mode = "calendar_days"
    roll_to_working_day: bool = True
    accept_days: int = Days
    sign_days: int = Days
    # Limits that are not the 条例's own count in a mode of their own: the local sign-for limit (None:
    # as ``calendar``), the 5 working days of an objection (Art. 23) and the delegated-service limits
    # (代办时限: working days, as the Administrative Licensing Law counts them).
    sign_calendar: Mode | None = None
    objection_days: int = Field(5, gt=0, le=60)
    objection_calendar: Mode = "working_days"
    agent_calendar: Mode = "working_days"
    reply_days: int = Days
    max_extension_days: int = Days
    review_days: int = Days
    review_request_days: int = Days
    feedback_days: int = Days
    archive_days: int = Days
    remind_before_days: int = Field(ge=0, le=60)
    escalate_after_days: int = Field(ge=0, le=60)

    @property
    def uses_holidays(self) -> bool:
        """Whether due dates depend on the official holiday schedule."""
        return self.calendar == "working_days" or self.roll_to_working_day

    def last_day(self, day: date, days: int, roll: bool = True, calendar: Mode | None = None) -> date:
        """The last day of a time limit of ``days`` counted from ``day`` (not counting ``day``), in
        ``calendar`` (default: the policy's mode)."""
        if (calendar or self.calendar) == "working_days":
            last = nth_working_day_after(day, days)
        else:
            last = day + timedelta(days=days)
            if not (roll and self.roll_to_working_day):
                return last
            last = next_working_day(last)
        _warn_if_provisional(last)
        return last

    def provisional(self, due_at: datetime) -> bool:
        """A due date counted over a year whose official schedule (make-up working days) the
        installed calendar does not know yet: it may move when the State Council publishes it."""
        return self.uses_holidays and _county_day(due_at - timedelta(days=1)).year > schedule_known_through()

    def due(self, start: datetime, days: int, roll: bool = True, calendar: Mode | None = None) -> datetime:
        """The end (midnight, county time) of the time limit's last day (:meth:`last_day`).
        ``roll=False`` for internal timings, which are not moved off rest days; ``calendar`` for a
        limit counted in a mode of its own (``sign_calendar``, ``objection_calendar``, ``agent_calendar``)."""
        return _end_of(self.last_day(_county_day(start), days, roll, calendar))

    def extended(self, due_at: datetime, days: int) -> datetime:
        """A due date extended by ``days`` (延期), counted in the policy's mode from its last day."""
        return _end_of(self.last_day(_county_day(due_at) - timedelta(days=1), days))

    def remind_at(self, due_at: datetime) -> datetime:
        """When the reminder (催办) before a due date is sent: ``remind_before_days`` days before it
        ends; in working-day mode, at the start of the working day from which that many working days
        remain."""
        n = self.remind_before_days
        if self.calendar != "working_days" or n == 0:
            return due_at - timedelta(days=n)
        return _start_of(nth_working_day_before(_county_day(due_at) - timedelta(days=1), n - 1))

    def escalate_at(self, due_at: datetime) -> datetime:
        """When an overdue case is escalated (升级督办): ``escalate_after_days`` whole days after its
        due date; in working-day mode, whole working days, at the start of the next working day."""
        n = self.escalate_after_days
        if self.calendar != "working_days":
            return due_at + timedelta(days=n)
        return _start_of(nth_working_day_after(_county_day(due_at) - timedelta(days=1), n + 1))


def load_policy(config_dir: Path | str) -> DeadlinePolicy:
    return ConfigDoc.read(Path(config_dir) / "deadlines.yaml").parse(DeadlinePolicy)


@lru_cache(maxsize=16)
def _china(year: int):  # noqa: ANN202
    import holidays

    return holidays.China(years=year)


def is_working_day(day: date) -> bool:
    """A weekday that is no official holiday, or a weekend made a working day (调休上班)."""
    return _china(day.year).is_working_day(day)


def nth_working_day_after(day: date, n: int) -> date:
    """The n-th working day after ``day`` (``day`` itself not counted; n=0: ``day``)."""
    while n > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def nth_working_day_before(day: date, n: int) -> date:
    """``day`` when n=0 and it is a working day; else the n-th working day before it (the working
    day on or before ``day`` counts as the 0th)."""
    while not is_working_day(day):
        day -= timedelta(days=1)
    while n > 0:
        day -= timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def next_working_day(day: date) -> date:
    """``day`` if it is a working day, else the first working day after it."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def _county_day(at: datetime) -> date:
    return at.astimezone(CHINA_TZ).date()


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), CHINA_TZ).astimezone(timezone.utc)


def _end_of(day: date) -> datetime:
    return _start_of(day + timedelta(days=1))


_warned: dict[int, float] = {}


def _warn_if_provisional(last: date) -> None:
    """A warning naming the year, whenever a due date falls beyond the known schedule (at most once
    every ten minutes per year: a sweep computes many)."""
    if last.year <= schedule_known_through() or time_now() - _warned.get(last.year, -1e9) < 600:
        return
    _warned[last.year] = time_now()
    log.warning("a due date in %s is provisional: the holidays package does not know that year's official "
                "schedule (make-up working days) yet; update it when the State Council publishes it", last.year)


@lru_cache(maxsize=1)
def schedule_known_through() -> int:
    """The last year whose official schedule (holidays and make-up working days) the installed
    ``holidays`` package knows; later years get the statutory holidays without make-up days."""
    year = date.today().year + 1
    while year > 2000 and not any(d.year == year for d in _china(year).weekend_workdays):
        year -= 1
    return year
