"""One verdict on every event, the same in every consumer (routing, supervision, scoring, a rebuild).

An event is refused before it changes anything when it names a code the county does not have
(:func:`unknown_codes`), or when it claims a case number another receipt already holds
(:func:`check_receipt`). The shared consumer dead-letters both kinds, so an event one service refuses
as invalid, every service refuses, with the same reason. Whether an event makes sense where it falls
in its case's lifecycle is the lifecycle's own verdict (``shared/lifecycle.py``).
"""
from __future__ import annotations

from shared import events as ev
from shared.directory import Directory


class Refusal(Exception):  # noqa: N818 - a verdict, not a failure
    """Raised by a handler, inside the batch's transaction: the event is dead-lettered at once with
    ``kind`` and ``reason`` (never retried: the answer would not change), and nothing it did stays."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def unknown_codes(event: ev.Event, d: Directory) -> str | None:
    """The first directory code the event names that the county does not have, as a reason; None
    when every code is known. The same check in every consumer (``rejected`` dead letters)."""
    if isinstance(event, ev.CaseReceived):
        if event.township not in d.townships:
            return f"unknown township {event.township!r}"
        if event.village is not None and (event.village not in d.villages
                                          or d.villages[event.village][1].code != event.township):
            return f"unknown village {event.village!r} of township {event.township!r}"
        if event.category is not None and event.category not in d.categories:
            return f"unknown category {event.category!r}"
        for unit in event.accused_units:
            if unit not in d.units:
                return f"unknown accused unit {unit!r}"
    if isinstance(event, ev.UnitCaseEvent) and event.unit not in d.units:
        return f"unknown unit {event.unit!r}"
    if isinstance(event, ev.CaseAssigned) and event.category is not None and event.category not in d.categories:
        return f"unknown category {event.category!r}"
    leader = getattr(event, "leader_id", None)
    if isinstance(event, (ev.LeaderAssigned, ev.CaseEscalated)) and leader is not None and leader not in d.leaders:
        return f"unknown leader {leader!r}"
    return None


def before_apply(subject: str, event: ev.Event, d: Directory | None) -> tuple[str, str] | None:
    """(kind, reason) when a decoded event is refused before it is applied — ``forged`` (its subject
    is not the one its type and unit imply) or ``rejected`` (unknown codes) — else None. The live
    consumer and scoring's rebuild both ask this."""
    if subject != event.subject:
        return "forged", (f"{event.type} naming unit {getattr(event, 'unit', None)!r} belongs on "
                          f"{event.subject!r}, not {subject!r}")
    reason = unknown_codes(event, d) if d is not None else None
    return ("rejected", reason) if reason is not None else None


def check_receipt(case_id: str, already_received: bool) -> None:
    """A ``CaseReceived`` for a case number this service already holds under another event id (a
    redelivery of the same event never gets here: the inbox drops it) is a conflict: refused by every
    consumer, and the first receipt stands."""
    if already_received:
        raise Refusal("conflict", f"case {case_id} was already received under another event id")
