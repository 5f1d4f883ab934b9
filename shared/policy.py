"""The deadline policy (DESIGN §4), loaded from ``deploy/config/deadlines.yaml``, and the calendar
that counts its days: calendar days, or working days with China's official holidays and make-up
working days (调休) from the ``holidays`` package."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.directory import ConfigDoc

CHINA_TZ = timezone(timedelta(hours=8))
Days = Field(gt=0, le=365)


class DeadlinePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    calendar: Literal["calendar_days", "working_days"] = "calendar_days"
    accept_days: int = Days
    sign_days: int = Days
    reply_days: int = Days
    max_extension_days: int = Days
    review_days: int = Days
    review_request_days: int = Days
    feedback_days: int = Days
    archive_days: int = Days
    remind_before_days: int = Field(ge=0, le=60)
    escalate_after_days: int = Field(ge=0, le=60)

    def due(self, start: datetime, days: int) -> datetime:
        """The end (midnight, county time) of the ``days``-th day after ``start``'s day."""
        day = start.astimezone(CHINA_TZ).date()
        if self.calendar == "calendar_days":
            last = day + timedelta(days=days)
        else:
            last = nth_working_day_after(day, days)
        return datetime.combine(last + timedelta(days=1), time(0), CHINA_TZ).astimezone(timezone.utc)


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
    while n > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def schedule_known_through() -> int:
    """The last year whose official schedule (holidays and make-up working days) the installed
    ``holidays`` package knows; later years get the statutory holidays without make-up days."""
    year = date.today().year + 1
    while year > 2000 and not any(d.year == year for d in _china(year).weekend_workdays):
        year -= 1
    return year
