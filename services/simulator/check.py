"""The simulator knows what it did: it checks the system's answers against its own record.

For every case: the state supervision shows is the one the simulator's steps lead to under the
procedure's rules (not accepted → closed; a re-review's opinion → closed; satisfied → closed; no
feedback → closed after the feedback window; not satisfied and asking for nothing → closed only after
the review window; a review or re-review asked → reopened until the reviewing body answers); and
each step it took is visible — in supervision's case view (``acceptance``, ``extension``,
``reviewers``, ``opinion_level``, ``final``, the lead unit), its timeline (every objection and its
decision, the head's extension decision, nothing the simulator did refused), the written notices
(受理/不予受理告知书, 延期告知书, 处理意见书, 复查/复核意见书) and the close's reason on the bus. The
year's report has the simulator's own counts (scoring's definitions, services/scoring/domain.py
``figures``), and every petition on a re-reviewed matter was refused (不再受理).
"""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, datetime, time

import httpx

from services.simulator.runner import Simulation, Tracked
from shared.policy import CHINA_TZ

FINAL = {"closed", "archived"}
# The steps the simulator sends (as units, residents, heads and the office): none may be refused.
SENT = {"UnitSigned", "CaseReturned", "AcceptanceDecided", "ObjectionDecided", "ExtensionRequested",
        "ExtensionDecided", "CaseReplied", "PetitionerFeedback", "ReviewRequested"}
NOTICES = ("accept_notice", "not_accept_notice", "extension_notice", "opinion", "review_opinion", "re_review_opinion")


def _at(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def closes_by(sim: Simulation, c: Tracked, end: date, replied_at: datetime | None = None) -> str | None:
    """Why supervision has closed the case by ``end``'s sweep (its clock: 09:00 that day), if it has:
    the close reason the procedure gives (supervision/domain.py ``should_close``)."""
    if c.acceptance == "not_accepted":
        return "not_accepted"
    if not c.opinions or c.review_pending:
        return None
    if c.opinions[-1] == "re_review":
        return "re_reviewed"
    if c.answer is True:
        return "satisfied"
    now = datetime.combine(end, time(9), CHINA_TZ)
    at = replied_at or c.replied_at
    policy = sim.policy
    if c.answer is None and now >= policy.due(at, policy.feedback_days, roll=False):
        return "no_feedback"
    if c.answer is False and now >= policy.due(at, policy.review_request_days):
        return "no_review"
    return None


def expected_state(sim: Simulation, case_id: str, end: date, replied_at: datetime | None = None) -> set[str]:
    """The states the simulator's own actions leave a case in at ``end``."""
    c = sim.cases[case_id]
    if closes_by(sim, c, end, replied_at):
        return FINAL
    if c.opinions:
        return {"reopened"} if c.review_pending else {"replied"}
    if c.lead is None:
        return {"triage"}  # an approved objection sent it back and routing found no other unit (the sim triages tomorrow)
    if c.acceptance == "accepted":
        return {"accepted"}
    return {"signed"} if c.signed else {"assigned"}


def concluded(c: Tracked) -> bool:
    """办结 (scoring's definition): the lead unit's opinion or 不予受理, no review waiting."""
    return (c.acceptance == "not_accepted" or "lead" in c.opinions) and not c.review_pending


def visit_problems(sim, by_cadre: dict, year: int) -> list[str]:  # noqa: ANN001 - a Simulation
    """The night visits by cadre kind, as the simulator logged them: visits, 户次, problems collected
    (the cases made and those solved on the spot), solved (the cases concluded and those), suggestions."""
    out = []
    for kind in ("township_leader", "station_staff"):
        visits = [v for v in sim.plan.visits if v.kind == kind and v.day.year == year]
        made = [sim.cases[c] for v in visits for c in v.case_ids]
        on_spot = sum(v.solved_on_spot for v in visits)
        want = {"visits": len(visits), "households_visited": sum(v.households for v in visits),
                "problems": len(made) + on_spot, "solved": sum(map(concluded, made)) + on_spot,
                "suggestions": sum(v.suggestions for v in visits)}
        got = {k: by_cadre.get(kind, {}).get(k, 0) for k in want}
        if got != want:
            out.append(f"report night visits of {kind} = {got}, the simulator logged {want}")
    return out


def report_problems(sim, report: dict, year: int) -> list[str]:  # noqa: ANN001 - a Simulation
    """Every other figure the annual report states, against the simulator's own record: each channel's
    cases and conclusions, the agents and agencies that filed, the drives' disputes and leader cases,
    the 交办 notices by number, the county's agent network."""
    out = []

    def differs(what: str, shown: object, counted: object) -> None:
        if shown != counted:
            out.append(f"report {what} = {shown!r}, the simulator counted {counted!r}")
    mine = [c for c in sim.cases.values() if c.received.year == year]
    for channel in sorted({c.channel for c in mine}):
        cases = [c for c in mine if c.channel == channel]
        shown = report["channels"][channel]
        differs(f"{channel} received, closed", (shown["received"], shown["closed"]),
                (len(cases), sum(map(concluded, cases))))
    delegated = [c.body["delegation"]["agent_id"] for c in mine if c.channel == "delegated"]
    dg = report["channels"]["delegated"]
    differs("delegated agents, agencies", (dg.get("agents"), dg.get("agencies")),
            (len(set(delegated)), len({sim.d.agency_of(a).code for a in delegated})))
    drives = {d["drive_id"]: d for d in report["channels"]["screening"]["drives"]}
    for drive in (d for d in sim.plan.drives if d.drive_id and d.opens.year == year):
        shown = drives.get(drive.drive_id, {})
        differs(f"drive {drive.name} disputes, leader cases", (shown.get("disputes"), shown.get("important")),
                (len(drive.case_ids), len(set(drive.case_ids) & sim.led) if drive.period else 0))
    handed = [no for no in sim.notices.values()]
    differs("交办 notices", report["notices"]["assignment"], handed)
    differs("cases handed to leaders", report["notices"]["led_cases"], len(sim.led))
    differs("agent network", report["network"], {"agencies": len(sim.d.agencies), "agents": len(sim.d.agents)})
    return out


async def notice_problems(sim, http) -> list[str]:  # noqa: ANN001 - a Simulation, an httpx client
    """Each 交办 notice in supervision lists the cases it handed and the units' reports back."""
    out = []
    for notice_id, no in sim.notices.items():
        shown = (await http.get(f"{sim.ep.urls['supervision']}/api/v1/notices/{notice_id}")).json()
        if shown.get("notice_no") != no or {r["unit"] for r in shown.get("replies", [])} != sim.replied[notice_id]:
            out.append(f"notice {no}: supervision shows {shown.get('notice_no')} with replies from "
                       f"{sorted(r['unit'] for r in shown.get('replies', []))}, the simulator recorded "
                       f"{sorted(sim.replied[notice_id])}")
    return out


def own_figures(sim: Simulation, year: int) -> dict[str, int]:
    """The report's figures, as the simulator counts them (scoring's definitions)."""
    mine = [c for c in sim.cases.values() if c.received.year == year]
    return {
        "received": len(mine),
        "accepted": sum(c.acceptance == "accepted" for c in mine),
        "not_accepted": sum(c.acceptance == "not_accepted" for c in mine),
        "closed": sum(concluded(c) for c in mine),
        "extensions": sum(c.extension == "approved" for c in mine),
        "with_feedback": sum(bool(c.feedback) for c in mine),
        "satisfied": sum(bool(c.feedback) and c.feedback[-1] for c in mine),
        "reviews": sum(c.requested.count("review") for c in mine),
        "re_reviews": sum(c.requested.count("re_review") for c in mine),
        "reviews_answered": sum(c.opinions.count("review") for c in mine),
        "re_reviews_answered": sum(c.opinions.count("re_review") for c in mine),
        "reviews_changed": sum(o in ("changed", "revoked") for c in mine for o in c.outcomes),
        "objections": sum(len(c.objections) for c in mine),
        "objections_rejected": sum(d is False for c in mine for _, d in c.objections),
        "returns": sum(d is True for c in mine for _, d in c.objections),
        "mediated": sum(concluded(c) and c.result == "mediated" for c in mine),
    }


def procedure_problems(sim: Simulation, c: Tracked, end: date, view: dict, timeline: list[dict],
                       notices: list[dict], closes: list[str]) -> list[str]:
    """Each step the simulator took on the case, as supervision shows it."""
    out: list[str] = []

    def differs(what: str, shown: object, expected: object) -> None:
        if shown != expected:
            out.append(f"{c.case_id}: {what} {shown!r}, the simulator expected {expected!r}")

    differs("acceptance", view.get("acceptance"), c.acceptance)
    if c.lead is not None:
        differs("lead unit", view.get("lead"), c.lead)
    differs("extension", view.get("extension"), c.extension)
    differs("reviewers", view.get("reviewers") or {}, c.reviewers)
    for level in c.requested:  # the body one level up (Art. 35, 36), never the unit that handled the case
        above = c.reviewers.get("review") if level == "re_review" else c.lead
        body = sim.d.review_body_of(above) if above else None
        if c.reviewers.get(level) != (body or sim.d.reviewer(c.lead, level)):
            out.append(f"{c.case_id}: the {level} went to {c.reviewers.get(level)}, but the directory names "
                       f"{body} (one level above {above})")
    differs("review level", view.get("review_level"), c.requested[-1] if c.requested else None)
    if c.opinions:
        differs("opinion level", view.get("opinion_level"), None if c.opinions[-1] == "lead" else c.opinions[-1])
    reason = closes_by(sim, c, end, _at(view.get("replied_at")))
    now = datetime.combine(end, time(9), CHINA_TZ)
    window_passed = c.replied_at is not None and now > sim.policy.due(
        _at(view.get("replied_at")) or c.replied_at, sim.policy.review_request_days)
    differs("final", view.get("final"), reason is not None and (reason in ("not_accepted", "re_reviewed") or window_passed))
    # The close's reason on the bus: the last close is the one the simulator's steps lead to.
    if reason is not None:
        differs("close reason", closes[-1] if closes else None, reason)
    else:  # the simulator asks for a review only before its case could close
        differs("closes", closes, [])
    # The timeline: every objection and its decision, the head's extension decision, nothing refused.
    applied = [s for s in timeline if s["status"] == "applied"]
    for unit in {u for u, _ in c.objections}:
        mine = [d for u, d in c.objections if u == unit]
        differs(f"objections of {unit}", sum(s["event"] == "CaseReturned" and s["unit"] == unit for s in applied),
                len(mine))
        differs(f"objection decisions on {unit}",
                sum(s["event"] == "ObjectionDecided" and s["unit"] == unit for s in applied),
                sum(d is not None for d in mine))
    if c.extension_by is not None:
        decided = [s for s in applied if s["event"] == "ExtensionDecided"]
        actor = (decided[-1].get("actor") or {}) if decided else {}
        differs("extension decided by", actor.get("id") if decided else None,
                f"{c.lead}:head" if c.extension_by == "head_api" else c.lead)
    for s in timeline:
        if s["event"] in SENT and s["status"] != "applied":
            out.append(f"{c.case_id}: {s['event']} of {s['unit'] or 'the resident'} {s['status']}: {s.get('reason')}")
    # The written notices (书面告知): one for each step the resident is told of.
    shown = Counter(n["kind"] for n in notices)
    expected = Counter({"accept_notice": c.acceptance == "accepted", "not_accept_notice": c.acceptance == "not_accepted",
                        "extension_notice": c.extension == "approved", "opinion": c.opinions.count("lead"),
                        "review_opinion": c.opinions.count("review"), "re_review_opinion": c.opinions.count("re_review")})
    for kind in NOTICES:
        differs(f"{kind} notices", shown[kind], int(expected[kind]))
    return out


async def self_check(sim: Simulation, end: date) -> list[str]:
    problems: list[str] = list(sim.anomalies)
    http = sim.http = httpx.AsyncClient(timeout=120, headers=sim.ep.auth("clerk"))
    sup = sim.ep.urls["supervision"]
    closes = await _closes(sim)
    gate = asyncio.Semaphore(8)

    async def one(case_id: str) -> list[str]:
        async with gate:
            answer = await http.get(f"{sup}/api/v1/cases/{case_id}")
            if answer.status_code != 200:
                return [f"{case_id}: unknown to supervision ({answer.status_code})"]
            view = answer.json()
            c = sim.cases[case_id]
            out = []
            expected = expected_state(sim, case_id, end, _at(view.get("replied_at")))
            if view["state"] not in expected:
                out.append(f"{case_id}: {view['state']}, expected {' or '.join(sorted(expected))}")
            timeline = (await http.get(f"{sup}/api/v1/cases/{case_id}/timeline")).json()
            notices = await http.get(f"{sup}/api/v1/cases/{case_id}/documents")
            if notices.status_code != 200:
                return [*out, f"{case_id}: no notices ({notices.status_code})"]
            return out + procedure_problems(sim, c, end, view, timeline, notices.json(), closes.get(case_id, []))

    try:
        for found in await asyncio.gather(*(one(case_id) for case_id in sorted(sim.cases))):
            problems += found
        year = sim.plan.year
        report = (await http.get(f"{sim.ep.urls['scoring']}/api/v1/reports/{year}")).json()
        for key, value in own_figures(sim, year).items():
            if report["figures"].get(key) != value:
                problems.append(f"report {key} = {report['figures'].get(key)}, the simulator counted {value}")
        problems += report_problems(sim, report, year)
        problems += visit_problems(sim, report["channels"]["night_visit"].get("by_cadre", {}), year)
        problems += await notice_problems(sim, http)
    finally:
        await http.aclose()
    # 不再受理: every petition on a re-reviewed matter was refused, naming the final case.
    for c in sim.cases.values():
        if c.refile is not None and (c.refile["status"], c.refile["reason"]) != (409, "not_accepted_again"):
            problems.append(f"{c.case_id}: the re-reviewed matter filed again was answered {c.refile}, "
                            "not refused (不再受理)")
    problems += await _stream_check(sim)
    return problems


async def _read(sim: Simulation, subject: str) -> list:
    """Every event stored on ``subject``, oldest first."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    from shared.events import decode

    nc = await nats.connect(sim.ep.nats_url, **sim.ep.nats_options("admin"))
    found = []
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream=sim.ep.stream)
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when a fetch finds nothing
                break
            for m in msgs:
                found.append(decode(m.data))
                await m.ack()
            if msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await nc.close()
    return found


async def _closes(sim: Simulation) -> dict[str, list[str]]:
    """Each case's close reasons on the bus (CaseClosed), in order."""
    out: dict[str, list[str]] = {}
    for e in await _read(sim, "cases.closed"):
        out.setdefault(e.case_id, []).append(e.reason)
    return out


async def _stream_check(sim: Simulation) -> list[str]:
    """Every filed case has exactly one CaseReceived in the stream; no event id twice."""
    seen: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    for e in await _read(sim, "cases.received"):
        seen[e.case_id] += 1
        ids[e.event_id] += 1
    problems = [f"{c}: {n} CaseReceived" for c, n in seen.items() if n != 1]
    problems += [f"{c}: never received" for c in sim.cases if c not in seen]
    problems += [f"event {i} stored {n} times" for i, n in ids.items() if n != 1]
    return problems
