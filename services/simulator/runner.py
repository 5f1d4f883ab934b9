"""Plays a planned year through the running system — over its HTTP APIs and the bus, never its
tables — a day at a time, with every service's clock set to the simulated day.

Each step of the lawful procedure (信访工作条例 2022) is played by whoever takes it in a county:
the lead unit signs for a case (签收) and decides on its acceptance (受理 / 不予受理, Art. 23), or
objects that it is not its own (异议) and the supervision office approves or rejects the objection
through supervision's API; the unit asks for an extension (延期) and its own head decides — through
supervision's API with a ``unit_head`` token, or in the unit's own system (``ExtensionDecided``);
the unit gives its handling opinion (处理意见书); the resident answers it, and may ask for a review
(复查), answered by the body one level up, and then a re-review (复核), answered by the level above
that; a few residents then file the same matter again, which intake refuses (不再受理, Art. 36).

What each does is drawn at the rates of ``model.RATES`` and the units' habits, from the seed. So
that even a shortened year plays the whole procedure, a path that :data:`AT_LEAST` names is taken by
the first case that can take it until the run has taken it that many times (a full year's rates
give many of each anyway). Every choice is made inside the day's actions, which run in a fixed
order, so a seed always plays the same year.
"""
from __future__ import annotations

import asyncio
import random
import time as wall
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import httpx
import nats

from services.simulator.model import CHANNEL_PACE, NOT_ACCEPTED, RATES, REVIEW_DAYS, Drive, Year
from services.units.client import Refused, UnitClient
from shared import events as ev
from shared.clock import ManualClock
from shared.directory import Directory
from shared.policy import CHINA_TZ, DeadlinePolicy

SERVICES = ("intake", "routing", "supervision", "scoring")

# The procedure's steps the simulator takes, as the run's summary counts them (``Simulation.steps``).
STEPS = {
    "signed": "签收: the lead unit signed for a case",
    "accepted": "受理: the lead unit accepted it (AcceptanceDecided accepted)",
    "not_accepted": "不予受理: not accepted, with the reason and the legal path; closed at once",
    "objected": "异议: a unit objected that a case is not its own (CaseReturned, 1-3 days after receipt)",
    "objection_approved": "异议 approved by the supervision office (API): the case routed again",
    "objection_rejected": "异议 rejected: the unit signed for, accepted and handled the case",
    "extension_requested": "延期申请 by the lead unit, before the opinion was due",
    "extension_by_head_api": "延期 decided by the unit's head through supervision's API (unit_head token)",
    "extension_by_unit_system": "延期 decided by the unit's head in the unit's own system (ExtensionDecided)",
    "extension_approved": "延期 approved (the rest refused)",
    "opinion": "处理意见书: the lead unit's handling opinion (办结)",
    "feedback": "评价: the resident's feedback on an opinion",
    "satisfied": "the resident satisfied (closed at once)",
    "silent": "no feedback (closed after the feedback window)",
    "no_review": "not satisfied, and asked for nothing (closed after the review window, no_review)",
    "review": "复查 requested",
    "review_opinion": "复查意见 by the reviewing body (one level above the lead unit)",
    "re_review": "复核 requested",
    "re_review_opinion": "复核意见 by the body above that (final, closed at once)",
    "refiled_refused": "不再受理: the same resident filed a re-reviewed matter again, refused by intake (409)",
    "refused_repeat_filing": "不再受理 of a planned filing by a repeat petitioner on a re-reviewed matter",
}
# Paths every run takes at least this often, however short (see the module's docstring).
AT_LEAST = Counter({"not_accepted": 1, "objected": 2, "objection_approved": 1, "objection_rejected": 1,
                    "extension_requested": 2, "extension_approved": 1, "head_api": 1, "head_unit": 1,
                    "review": 1, "no_review": 1,
                    "silent": 1, "re_review": 1, "refile": 1})
OBJECTION_REASON = "经审查，该事项不属于本单位职责范围，请予重新交办"


@dataclass
class Endpoints:
    urls: dict[str, str]
    nats_url: str
    stream: str = "CASES"
    # Bearer tokens by who acts: "clerk", "supervisor", "ops", "agent:<agent id>" for each agent and
    # "unit_head:<unit code>" for each unit's head (shared/tokens.py); the residents' calls carry none.
    tokens: dict[str, str] = field(default_factory=dict)
    # The NATS users' files of the simulated system (shared/natsauth.py); None: anonymous. The
    # simulator watches the bureau's side as admin (it owns the system; ops may create no consumer)
    # and acts for each unit as that unit's user.
    creds_dir: Path | None = None

    def creds(self, user: str) -> Path | None:
        return self.creds_dir / f"{user}.json" if self.creds_dir is not None else None

    def nats_options(self, user: str) -> dict:
        from shared.natsauth import file_options

        return file_options(self.creds(user))

    def auth(self, who: str | None) -> dict[str, str]:
        """The ``Authorization`` header of ``who``'s token; none for a resident (``who`` None)."""
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}


@dataclass
class Tracked:
    """What the simulator did to a case, so it can check the system afterwards."""

    case_id: str
    channel: str
    received: date
    query_code: str
    body: dict | None = None  # the matter as filed (a refiling sends it again); None: a screened dispute
    lead: str | None = None  # the lead unit, as routing last assigned it (None: in triage)
    signed: bool = False  # by the current lead
    acceptance: str | None = None  # accepted, not_accepted
    objections: list[list] = field(default_factory=list)  # [unit, None (waiting) / True (approved) / False]
    extension: str | None = None  # requested, approved, refused
    extension_by: str | None = None  # head_api (supervision's API), head_unit (the unit's own system)
    extension_days: int = 0
    reply_on: date | None = None  # when the lead unit means to give its opinion
    opinions: list[str] = field(default_factory=list)  # whose each opinion was: lead, review, re_review
    outcomes: list[str] = field(default_factory=list)  # the reviewing bodies' outcomes
    last_reply: date | None = None
    replied_at: datetime | None = None  # the latest opinion, as the simulator's clock stamped it
    feedback: list[bool] = field(default_factory=list)
    answer: bool | None = None  # the resident's feedback on the latest opinion
    requested: list[str] = field(default_factory=list)  # the review levels asked for
    reviewers: dict[str, str] = field(default_factory=dict)  # level → the body routing named
    refile: dict | None = None  # what intake answered to the same matter filed again
    result: str | None = None  # the lead unit's opinion: resolved, mediated (调解协议)…

    @property
    def review_pending(self) -> bool:
        """A review or re-review asked for and not answered yet by the reviewing body."""
        return len(self.requested) > sum(level != "lead" for level in self.opinions)


class Simulation:
    def __init__(self, ep: Endpoints, directory: Directory, plan: Year, seed: int,
                 progress: Callable[[str], None] = print, policy: DeadlinePolicy | None = None) -> None:
        self.ep, self.d, self.plan, self.seed, self.progress = ep, directory, plan, seed, progress
        if policy is None:
            from shared.policy import load_policy
            from shared.settings import Settings

            policy = load_policy(Settings().config_dir)
        self.policy = policy
        self.feedback_days = policy.feedback_days
        self.clock = ManualClock(datetime.combine(date(plan.year, 1, 1), time(9), CHINA_TZ))
        self.cases: dict[str, Tracked] = {}
        self.todo: dict[date, list[tuple]] = defaultdict(list)
        self.seen: asyncio.Queue = asyncio.Queue()
        self.placed: set[str] = set()
        self.units: dict[str, UnitClient] = {}
        self.refused = 0
        self.events_sent = 0
        self.steps: Counter[str] = Counter()  # each step taken, as STEPS names them
        self.chosen: Counter[str] = Counter()  # each path chosen (for AT_LEAST)
        self.anomalies: list[str] = []  # what the system answered that a lawful step should not get
        self.late = 0  # assignments seen only after the day their unit was to act (then it acts the next day)
        self.today = date(plan.year, 1, 1)
        self.acting = False
        self.notices: dict[str, str] = {}  # the 交办 notices issued: id → number
        self.led: set[str] = set()  # the cases they handed to leaders
        self.notice_replies: dict[date, list[tuple[str, str]]] = defaultdict(list)  # day → (notice, unit)
        self.replied: dict[str, set[str]] = defaultdict(set)  # notice → the units that reported back

    # --- the year -------------------------------------------------------------------------------

    async def run(self, days: int, extra_days: int) -> None:
        self.http = httpx.AsyncClient(timeout=120)
        self.nc = await nats.connect(self.ep.nats_url, **self.ep.nats_options("admin"))
        js = self.nc.jetstream()
        self.subs = [await js.subscribe(subject, stream=self.ep.stream, cb=self._observe, ordered_consumer=True)
                     for subject in ("cases.assigned.*", "cases.triage")]
        started = wall.monotonic()
        try:
            first = date(self.plan.year, 1, 1)
            for i in range(days + extra_days):
                day = first + timedelta(days=i)
                await self._day(day, filing=i < days)
                if day.day == 1 or i == days + extra_days - 1:
                    rate = self.events_sent / max(wall.monotonic() - started, 1e-6)
                    self.progress(f"{day}  cases {len(self.cases):5d}  closed {await self._closed():5d}  "
                                  f"commands {self.events_sent:6d}  ({rate:.0f}/s)")
            await self.settled()
        finally:
            for unit in self.units.values():
                await unit.__aexit__()
            await self.nc.close()
            await self.http.aclose()

    async def _day(self, day: date, filing: bool) -> None:
        now = datetime.combine(day, time(9), CHINA_TZ)
        self.clock.set(now)
        self.today, self.acting = day, False
        await asyncio.gather(*(self._put(s, "/api/v1/clock", {"now": now.isoformat()}) for s in SERVICES))
        new: list[str] = []
        if filing:
            new += await self._drives(day)
            for n, body in enumerate(self.plan.filings.get(day, [])):
                case_id = await self._file(body, f"sim{self.seed}-{day}-{n}", day)
                if case_id is not None:
                    new.append(case_id)
            for v in (v for v in self.plan.visits if v.day == day):
                new += await self._visit(v, day)
        await self._until_placed(new)
        await self._triage()
        await self._observed()
        for drive in (d for d in self.plan.drives if d.opens == day and d.period and filing):
            await self._hand_to_leaders(drive)
        self.acting = True
        for action in sorted(self.todo.pop(day, []), key=lambda a: (a[1], a[0], a[2])):
            await self._act(day, *action)
        await self._report_back(day)
        # What the day's steps caused (a re-route, a reviewer named) is seen before the day ends, so
        # the units' next steps are planned from the day it happened, however fast the bus was.
        await self.settled(("routing", "supervision"))
        await self._caught_up()
        await self._post("supervision", "/api/v1/sweep", None, who="supervisor")

    # --- filing ---------------------------------------------------------------------------------

    async def _file(self, body: dict, key: str, day: date) -> str | None:
        # A delegated case is filed by its agent, with the agent's own token; the rest at the desk.
        who = f"agent:{body['delegation']['agent_id']}" if body["channel"] == "delegated" else "clerk"
        status, answer = await self._try("intake", "/api/v1/cases", body, key=key, who=who)
        if status == 409 and answer.get("reason") == "not_accepted_again":
            # A repeat petitioner of the plan, on a matter whose re-review was asked: 不再受理.
            self._refused_again(answer, None)
            return None
        if status >= 300:
            raise RuntimeError(f"intake /api/v1/cases: {status} {str(answer)[:300]}")
        return self._track(answer["case_number"], body["channel"], day, answer["query_code"], body)

    async def _visit(self, v, day: date) -> list[str]:  # noqa: ANN001 - a model.Visit
        problems = list(v.problems)
        while True:
            status, answer = await self._try("intake", "/api/v1/visits", {
                "cadre_name": "驻村干部", "cadre_unit": v.township, "township": v.township, "village": v.village,
                "visited_on": day.isoformat(), "households_visited": v.households, "problems": problems,
                "cadre_kind": v.kind, "visit_format": v.fmt, "solved_on_spot": v.solved_on_spot,
                "suggestions": v.suggestions},
                key=f"sim{self.seed}-visit-{day}-{len(problems)}")
            if status == 409 and answer.get("reason") == "not_accepted_again" and "problem" in answer:
                self._refused_again(answer, None)  # the visit is logged without that problem
                problems.pop(answer["problem"])
                continue
            if status >= 300:
                raise RuntimeError(f"intake /api/v1/visits: {status} {str(answer)[:300]}")
            break
        v.case_ids = [self._track(c["case_number"], "night_visit", day, c["query_code"],
                                  {**p, "channel": "night_visit", "township": v.township, "village": v.village})
                      for c, p in zip(answer["cases"], problems)]
        return v.case_ids

    def _track(self, case_id: str, channel: str, day: date, code: str, body: dict | None = None) -> str:
        self.cases[case_id] = Tracked(case_id, channel, day, code, body)
        return case_id

    def _refused_again(self, answer: dict, case: Tracked | None) -> None:
        """Intake refused a petition as 不再受理: it must name a case whose re-review was asked."""
        final = self.cases.get(answer.get("final_case") or "")
        if final is None or "re_review" not in final.requested:
            self.anomalies.append(f"intake refused a petition as 不再受理 naming {answer.get('final_case')}, "
                                  "which the simulator never saw re-reviewed")
        if case is None:
            self.steps["refused_repeat_filing"] += 1

    async def _drives(self, day: date) -> list[str]:
        new = []
        for n, drive in enumerate(self.plan.drives):
            if drive.opens == day:
                opened = await self._post("intake", "/api/v1/drives", {
                    "kind": drive.kind, "name": drive.name, "starts_on": drive.opens.isoformat(),
                    "ends_on": drive.closes.isoformat()})
                drive.drive_id = opened["drive_id"]
                rows = [{"row": i + 2, "values": _row(r)} for i, r in enumerate(drive.rows)]
                report = await self._post("intake", f"/api/v1/drives/{opened['drive_id']}/rows",
                                          {"source": f"sim{self.seed}d{n}x{day:%Y%m%d}", "rows": rows})
                # A row of a repeat petitioner on a re-reviewed matter is refused (不再受理), not stored.
                self.steps["refused_repeat_filing"] += len({e["row"] for e in report.get("errors", [])
                                                            if "不再受理" in e.get("message", "")})
                drive.case_ids = [self._track(number, "screening", day, "") for _, number in
                                  sorted(report["case_numbers"].items(), key=lambda x: int(x[0]))]
                new += drive.case_ids
            if drive.closes == day and drive.drive_id:
                await self._post("intake", f"/api/v1/drives/{drive.drive_id}/close", None)
        return new

    async def _hand_to_leaders(self, drive: Drive) -> None:
        """交办通知: the special-period drive's disputes, each made a leader case by routing, handed to
        their lead units and leaders by the office's numbered notice (青信联办发〔2026〕N号); the notice
        waits until supervision has seen every leader."""
        await self.settled(("routing", "supervision"))
        body = {"notice_type": "assignment", "case_ids": drive.case_ids,
                "title": f"关于{drive.period}期间信访矛盾纠纷领导包案督办的通知",
                "demands": "请各包案领导和主办单位按照属地管理、分级负责和谁主管、谁负责的原则，落实包案责任，"
                           "在规定时限内化解到位，并书面报告办理情况。",
                "reply_by": (drive.opens + timedelta(days=20)).isoformat()}
        notice = await self._post("supervision", "/api/v1/notices", body, who="supervisor")
        self.notices[notice["notice_id"]] = notice["notice_no"]
        self.led.update(notice["case_ids"])
        for unit in notice["units"]:  # each lead unit reports back (书面报告), most by the reply date
            when = drive.opens + timedelta(days=random.Random(f"{self.seed}:{notice['notice_no']}:{unit}").randint(5, 24))
            self.notice_replies[when].append((notice["notice_id"], unit))

    async def _report_back(self, day: date) -> None:
        """The units' written reports on a 交办 notice, recorded by the office's clerk."""
        for notice_id, unit in self.notice_replies.pop(day, []):
            await self._post("supervision", f"/api/v1/notices/{notice_id}/replies",
                             {"unit": unit, "text": "包案事项已落实专人办理，现将化解进展报告如下。"})
            self.replied[notice_id].add(unit)

    # --- what the system tells ------------------------------------------------------------------

    async def _observe(self, msg) -> None:  # noqa: ANN001
        await self.seen.put(ev.decode(msg.data))

    async def _until_placed(self, case_ids: list[str], timeout: float = 60) -> None:
        deadline = wall.monotonic() + timeout
        while not set(case_ids) <= self.placed:
            if wall.monotonic() > deadline:
                raise RuntimeError(f"routing did not place {len(set(case_ids) - self.placed)} cases")
            try:
                event = await asyncio.wait_for(self.seen.get(), timeout=1)
            except asyncio.TimeoutError:
                continue
            self._note(event)

    async def _observed(self) -> None:
        await self.nc.flush()
        while not self.seen.empty():
            self._note(self.seen.get_nowait())

    async def _caught_up(self, timeout: float = 30) -> None:
        """Until the watched subjects' every stored event has reached the simulator, then note them."""
        deadline = wall.monotonic() + timeout
        while wall.monotonic() < deadline:
            waiting = 0
            for sub in self.subs:
                try:
                    waiting += (await sub.consumer_info()).num_pending + sub.pending_msgs
                except Exception:  # noqa: BLE001 - an ordered consumer being recreated: look again
                    waiting += 1
            if waiting == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        await self._observed()

    def _note(self, event: ev.Event) -> None:
        self.placed.add(event.case_id)
        case = self.cases.get(event.case_id)
        if case is None:
            return
        if isinstance(event, ev.CaseNeedsTriage):
            case.lead, case.signed = None, False
            return
        if not isinstance(event, ev.CaseAssigned):
            return
        # From the day it happened (its time on the bus), so when it is seen changes nothing.
        base = event.occurred_at.astimezone(CHINA_TZ).date()
        if event.role == "reviewer":
            level = event.review_level or "review"
            case.reviewers[level] = event.unit
            rnd = random.Random(f"{self.seed}:{case.case_id}:{event.unit}:{level}")
            self._schedule(base + timedelta(days=rnd.randint(*REVIEW_DAYS)), "review_reply", case.case_id, event.unit)
        elif event.role == "co":
            self._schedule(base + timedelta(days=1), "sign", case.case_id, event.unit)
        else:
            case.lead, case.signed = event.unit, False
            self._schedule(base + timedelta(days=1), "receive", case.case_id, event.unit)

    def _schedule(self, day: date, kind: str, case_id: str, unit: str) -> None:
        if day < self.today or (day == self.today and self.acting):
            self.late += 1  # seen after its day's work was done: it is done the next day
            day = self.today + timedelta(days=1)
        self.todo[day].append((kind, case_id, unit))

    async def _triage(self) -> None:
        queue = await self.http.get(f"{self.ep.urls['routing']}/api/v1/triage", headers=self.ep.auth("clerk"))
        for item in queue.json():
            category = self.d.categories.get(item.get("suggested_category") or "")
            unit = (category.default_unit if category and category.default_unit else item["township"])
            await self._post("routing", f"/api/v1/triage/{item['case_id']}/decision",
                             {"unit": unit, "reason": "督办科研判"}, who="supervisor")
        await asyncio.sleep(0)

    # --- units, residents, the office -----------------------------------------------------------

    async def _act(self, day: date, kind: str, case_id: str, unit: str) -> None:
        case = self.cases[case_id]
        rnd = random.Random(f"{self.seed}:{case_id}:{kind}:{unit}:{len(case.opinions)}")
        self.clock.set(self.clock.now() + timedelta(seconds=1))  # each command after the one before
        try:
            await self.ACTIONS[kind](self, day, case, unit, rnd)
        except Refused:
            self.refused += 1

    async def _later(self, day: date, when: date, kind: str, case: Tracked, unit: str) -> None:
        """``kind`` on ``when``: today's is done now."""
        if when <= day:
            await self._act(day, kind, case.case_id, unit)
        else:
            self._schedule(when, kind, case.case_id, unit)

    def _pick(self, weights: dict[str, float], rnd: random.Random) -> str:
        """One of the outcomes, at its rate; one the run has taken fewer times than :data:`AT_LEAST`
        says is taken first."""
        missing = [o for o in weights if self.chosen[o] < AT_LEAST[o]]
        choice = missing[0] if missing else rnd.choices(list(weights), list(weights.values()))[0]
        self.chosen[choice] += 1
        return choice

    async def _send(self, unit: str, command: str, *args, **kwargs) -> ev.Event:  # noqa: ANN002, ANN003
        """A command of ``unit``, from its own system (services/units/client.py)."""
        event = await getattr(await self._unit(unit), command)(*args, **kwargs)
        self.events_sent += 1
        return event

    async def _receive(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """The lead unit reads a case assigned to it: one with the habit objects (异议) within 1-3 days
        of its receipt that the case is not its own; the others plan their sign-for (签收)."""
        if unit != case.lead:
            return
        habit = self.plan.habits[unit]
        if not case.objections and self._pick({"objected": habit.objection_rate,
                                                "no_objection": 1 - habit.objection_rate}, rnd) == "objected":
            await self._later(day, day + timedelta(days=rnd.randint(0, 2)), "object", case, unit)
            return
        await self._later(day, day + timedelta(days=max(0, rnd.randint(*habit.sign_days) - 1)), "sign", case, unit)

    async def _object(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """异议 (Art. 23): not this unit's matter, with its reasons, before it signs; the bureau decides."""
        if unit != case.lead:
            return
        await self._send(unit, "return_case", case.case_id, OBJECTION_REASON)
        case.objections.append([unit, None])
        self.steps["objected"] += 1
        self._schedule(day + timedelta(days=rnd.randint(1, 2)), "decide_objection", case.case_id, unit)

    async def _decide_objection(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """异议审核 by the supervision office, through supervision's API: approved, routing routes the
        case again without the unit; rejected, the unit signs for it, accepts and handles it."""
        approved = self._pick(RATES["objection"], rnd) == "objection_approved"
        reason = "异议成立，予以重新交办" if approved else "经审核，该事项属于你单位职责范围，异议不成立，请依法办理"
        if not await self._api("supervision", f"/api/v1/cases/{case.case_id}/objection",
                               {"unit": unit, "approved": approved, "reason": reason}, "supervisor"):
            return
        case.objections[-1][1] = approved
        self.steps["objection_approved" if approved else "objection_rejected"] += 1
        if approved:
            case.lead, case.signed = None, False  # until routing's new assignment is seen
        else:
            self._schedule(day + timedelta(days=1), "sign", case.case_id, unit)

    async def _sign(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """签收; the lead unit then decides on acceptance within a few days."""
        if unit == case.lead and case.signed:
            return
        await self._send(unit, "sign", case.case_id)
        if unit != case.lead:
            return  # a co-handling unit's sign-for only records
        case.signed = True
        self.steps["signed"] += 1
        self._schedule(day + timedelta(days=rnd.randint(*self.plan.habits[unit].accept_days)), "accept",
                       case.case_id, unit)

    async def _accept(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """受理决定 (Art. 23): mostly accepted — the opinion is then planned, and maybe an extension —
        a few not accepted, with the reason and the statutory path (the case closes at once)."""
        if unit != case.lead or case.acceptance is not None:
            return
        habit = self.plan.habits[unit]
        if self._pick(RATES["acceptance"], rnd) == "not_accepted":
            reason, path = rnd.choice(NOT_ACCEPTED)
            await self._send(unit, "decide_acceptance", case.case_id, "not_accepted", reason, path)
            case.acceptance = "not_accepted"
            self.steps["not_accepted"] += 1
            return
        await self._send(unit, "decide_acceptance", case.case_id, "accepted", "属于本机关职权范围，予以受理")
        case.acceptance = "accepted"
        self.steps["accepted"] += 1
        case.reply_on = day + timedelta(days=round(rnd.randint(*habit.reply_days) * CHANNEL_PACE.get(case.channel, 1)))
        rate = habit.extension_rate
        if self._pick({"extension_requested": rate, "no_extension": 1 - rate}, rnd) == "extension_requested":
            self._schedule(day + timedelta(days=rnd.randint(2, 8)), "extend", case.case_id, unit)
        else:
            self._schedule(case.reply_on, "reply", case.case_id, unit)

    async def _extend(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """延期申请 (Art. 34), well before the opinion is due; the unit's head decides in 1-3 days."""
        if unit != case.lead:
            return
        days = rnd.choice((15, 20, 30))
        await self._send(unit, "request_extension", case.case_id, days, "案情复杂，需进一步调查核实，申请延期办理")
        case.extension, case.extension_days = "requested", days
        self.steps["extension_requested"] += 1
        self._schedule(day + timedelta(days=rnd.randint(1, 3)), "head", case.case_id, unit)

    async def _head(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """延期审批 by the unit's own head (本机关负责人, Art. 34): through supervision's API with the
        head's ``unit_head`` token, or in the unit's own system; the opinion follows."""
        if unit != case.lead:
            return
        habit = self.plan.habits[unit]
        approved = self._pick(RATES["extension"], rnd) == "extension_approved"
        via = self._pick({"head_api": habit.head_api_share, "head_unit": 1 - habit.head_api_share}, rnd)
        days = case.extension_days if approved else 0
        reason = "情况属实，同意延期" if approved else "不同意延期，请按期出具处理意见"
        if via == "head_api":
            decided = await self._api("supervision", f"/api/v1/cases/{case.case_id}/extension",
                                      {"approved": approved, "days": days, "reason": reason}, f"unit_head:{unit}")
        else:
            await self._send(unit, "decide_extension", case.case_id, approved, days, reason, "局长")
            decided = True
        if decided:
            case.extension, case.extension_by = ("approved" if approved else "refused"), via
            self.steps["extension_by_head_api" if via == "head_api" else "extension_by_unit_system"] += 1
            self.steps["extension_approved"] += int(approved)
        reply_on = (case.reply_on or day) + timedelta(days=days if decided else 0)
        self._schedule(max(reply_on, day + timedelta(days=1)), "reply", case.case_id, unit)

    async def _reply(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """处理意见书 (Art. 32, 34): the case counts as 办结; the resident answers within a week."""
        if unit != case.lead or "lead" in case.opinions:
            return
        result = rnd.choices(("resolved", "mediated", "partly_resolved", "explained", "not_supported"),
                             (60, 10, 10, 15, 5))[0]
        case.result = result
        await self._send(unit, "reply", case.case_id, result, "经调查核实，已依法依规作出处理意见，现书面答复如下。")
        self._opinion(day, case, "lead")
        self.steps["opinion"] += 1
        if case.query_code:  # a screened dispute has none: it closes after the feedback window
            self._schedule(day + timedelta(days=rnd.randint(1, 7)), "feedback", case.case_id, "resident")

    async def _review_reply(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """复查意见 (Art. 35) or 复核意见 (Art. 36), by the reviewing body routing named, with its outcome.
        After a re-review the matter is final; a few residents file it again all the same."""
        level = case.requested[-1] if case.requested else None
        if level is None or case.reviewers.get(level) != unit or not case.review_pending:
            return
        outcomes = RATES["review_outcome"]
        outcome = rnd.choices(list(outcomes), list(outcomes.values()))[0]
        name = "复查" if level == "review" else "复核"
        await self._send(unit, "reply", case.case_id, "explained", f"经{name}，现出具{name}意见如下。",
                         review_outcome=outcome)
        self._opinion(day, case, level)
        case.outcomes.append(outcome)
        self.steps[f"{level}_opinion"] += 1
        if level == "review":
            self._schedule(day + timedelta(days=rnd.randint(1, 7)), "feedback", case.case_id, "resident")
        elif case.body is not None and self._pick(RATES["re_review_opinion"], rnd) == "refile":
            self._schedule(day + timedelta(days=rnd.randint(3, 20)), "refile", case.case_id, "resident")

    def _opinion(self, day: date, case: Tracked, level: str) -> None:
        case.opinions.append(level)
        case.last_reply, case.replied_at, case.answer = day, self.clock.now(), None

    async def _feedback(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """信访人评价 of the latest opinion — satisfied, silent, not satisfied and asking for nothing, or
        not satisfied and asking for a review (复查) of the lead unit's opinion or a re-review (复核) of
        the review's."""
        answer = self._pick(RATES["opinion" if case.opinions[-1] == "lead" else "review_opinion"], rnd)
        if answer == "silent":
            self.steps["silent"] += 1
            return
        satisfied = answer == "satisfied"
        if not await self._api("intake", f"/api/v1/cases/{case.case_id}/feedback",
                               {"query_code": case.query_code, "satisfied": satisfied}, None):
            return
        case.feedback.append(satisfied)
        case.answer = satisfied
        self.steps["feedback"] += 1
        if answer in ("satisfied", "no_review"):
            self.steps[answer] += 1
            return
        reason = "对处理意见不服，申请复查" if answer == "review" else "对复查意见不服，申请复核"
        if await self._api("intake", f"/api/v1/cases/{case.case_id}/reviews",
                           {"query_code": case.query_code, "level": answer, "reason": reason}, None):
            case.requested.append(answer)
            self.steps[answer] += 1

    async def _refile(self, day: date, case: Tracked, unit: str, rnd: random.Random) -> None:
        """The same resident brings the re-reviewed matter to the desk again: intake refuses it
        (不再受理, Art. 36), naming the case whose re-review is final."""
        b = case.body or {}
        body = {"channel": "walk_in", "resident": b["resident"], "township": b["township"], "village": b.get("village"),
                "title": b["title"], "content": b["content"], "category": b.get("category")}
        status, answer = await self._try("intake", "/api/v1/cases", body, key=f"sim{self.seed}-refile-{case.case_id}")
        self.events_sent += 1
        case.refile = {"status": status, "reason": answer.get("reason"), "final_case": answer.get("final_case")}
        if status == 409 and answer.get("reason") == "not_accepted_again":
            self._refused_again(answer, case)
            self.steps["refiled_refused"] += 1
        elif status < 300:
            self._track(answer["case_number"], "walk_in", day, answer["query_code"], body)
            await self._until_placed([answer["case_number"]])
        else:
            self.anomalies.append(f"{case.case_id}: the same matter filed again: {status} {str(answer)[:200]}")

    ACTIONS: dict[str, Callable] = {
        "receive": _receive, "object": _object, "decide_objection": _decide_objection, "sign": _sign,
        "accept": _accept, "extend": _extend, "head": _head, "reply": _reply, "review_reply": _review_reply,
        "feedback": _feedback, "refile": _refile}

    async def _unit(self, code: str) -> UnitClient:
        if code not in self.units:
            self.units[code] = await UnitClient(self.ep.nats_url, code, stream=self.ep.stream, clock=self.clock,
                                                creds=self.ep.creds(f"unit_{code}")).__aenter__()
        return self.units[code]

    # --- plumbing -------------------------------------------------------------------------------

    async def _try(self, service: str, path: str, body: dict | None, key: str | None = None,
                   who: str | None = "clerk") -> tuple[int, dict]:
        """The status and the answer's body; ``who``: whose token the call carries (Endpoints.tokens),
        None for a resident's call."""
        headers = {"Idempotency-Key": key} if key else {}
        answer = await self.http.post(self.ep.urls[service] + path, json=body, headers={**headers, **self.ep.auth(who)})
        try:
            data = answer.json()
        except ValueError:
            data = {"message": answer.text[:300]}
        return answer.status_code, data if isinstance(data, dict) else {"items": data}

    async def _post(self, service: str, path: str, body: dict | None, key: str | None = None,
                    who: str | None = "clerk") -> dict:
        status, answer = await self._try(service, path, body, key, who)
        if status >= 300:
            raise RuntimeError(f"{service} {path}: {status} {str(answer)[:300]}")
        return answer

    async def _api(self, service: str, path: str, body: dict, who: str | None) -> bool:
        """A step through a service's API (the office's, a head's, a resident's). Refused, the
        simulator notes it: every step it takes is lawful, so the self-check reports it."""
        status, answer = await self._try(service, path, body, who=who)
        if status >= 300:
            self.anomalies.append(f"{who or 'resident'} {service} {path}: {status} {answer.get('message', answer)}"[:400])
            return False
        self.events_sent += 1
        return True

    async def _put(self, service: str, path: str, body: dict) -> None:
        answer = await self.http.put(self.ep.urls[service] + path, json=body, headers=self.ep.auth("ops"))
        if answer.status_code >= 300:
            raise RuntimeError(f"{service} {path}: {answer.status_code} (is XF_MODE demo or test?)")

    async def _closed(self) -> int:
        answer = await self.http.get(f"{self.ep.urls['scoring']}/api/v1/reports/{self.plan.year}",
                                     headers=self.ep.auth("clerk"))
        return answer.json()["figures"]["closed"] if answer.status_code == 200 else 0

    async def settled(self, consumers: tuple[str, ...] = ("routing", "supervision", "scoring"),
                      timeout: float = 120) -> None:
        """Until every named consumer has taken and acknowledged all it will get: outboxes empty, then
        consumers idle, then the stream unchanged — twice running, so nothing slipped between looks."""
        js = self.nc.jetstream()
        deadline, clean, last_seq = wall.monotonic() + timeout, 0, -1
        while wall.monotonic() < deadline:
            outboxes = 0.0
            for s in SERVICES:
                text = (await self.http.get(f"{self.ep.urls[s]}/metrics")).text
                outboxes += sum(float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith("xf_outbox_pending "))
            infos = [await js.consumer_info(self.ep.stream, c) for c in consumers]
            pending = sum(i.num_pending + i.num_ack_pending for i in infos)
            seq = (await js.stream_info(self.ep.stream)).state.last_seq
            clean = clean + 1 if outboxes == 0 and pending == 0 and seq == last_seq else 0
            if clean == 2:
                return
            last_seq = seq
            await asyncio.sleep(0.01)
        raise RuntimeError("the system did not settle")


def _row(body: dict) -> dict:
    r = body["resident"]
    return {"name": r["name"], "id_number": r["id_number"], "phone": r["phone"], "township": body["township"],
            "village": body["village"], "category": body["category"], "title": body["title"],
            "content": body["content"], "people_count": body.get("people_count", 1),
            "escalated": body["escalated"], "backlog": body["backlog"]}
