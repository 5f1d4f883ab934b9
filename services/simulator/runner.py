"""Plays a planned year through the running system — over its HTTP APIs and the bus, never its
tables — a day at a time, with every service's clock set to the simulated day."""
from __future__ import annotations

import asyncio
import random
import time as wall
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import httpx
import nats

from services.simulator.model import Year
from services.units.client import Refused, UnitClient
from shared import events as ev
from shared.clock import ManualClock
from shared.directory import Directory
from shared.policy import CHINA_TZ

SERVICES = ("intake", "routing", "supervision", "scoring")


@dataclass
class Endpoints:
    urls: dict[str, str]
    nats_url: str
    stream: str = "CASES"
    # Bearer tokens by who acts: "clerk", "supervisor", "ops", and "agent:<agent id>" for each agent
    # (shared/tokens.py); the residents' calls carry none.
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
    lead: str | None = None
    returned: bool = False
    replies: int = 0
    last_reply: date | None = None
    feedback: list[bool] = field(default_factory=list)
    reviews: int = 0
    signed: bool = False
    answer: bool | None = None  # the resident's feedback on the latest reply
    review_pending: bool = False


class Simulation:
    def __init__(self, ep: Endpoints, directory: Directory, plan: Year, seed: int,
                 progress: Callable[[str], None] = print, feedback_days: int = 15) -> None:
        self.ep, self.d, self.plan, self.seed, self.progress = ep, directory, plan, seed, progress
        self.feedback_days = feedback_days
        self.clock = ManualClock(datetime.combine(date(plan.year, 1, 1), time(9), CHINA_TZ))
        self.cases: dict[str, Tracked] = {}
        self.todo: dict[date, list[tuple]] = defaultdict(list)
        self.seen: asyncio.Queue = asyncio.Queue()
        self.placed: set[str] = set()
        self.units: dict[str, UnitClient] = {}
        self.refused = 0
        self.events_sent = 0

    # --- the year -------------------------------------------------------------------------------

    async def run(self, days: int, extra_days: int) -> None:
        self.http = httpx.AsyncClient(timeout=120)
        self.nc = await nats.connect(self.ep.nats_url, **self.ep.nats_options("admin"))
        js = self.nc.jetstream()
        await js.subscribe("cases.assigned.*", stream=self.ep.stream, cb=self._observe, ordered_consumer=True)
        await js.subscribe("cases.triage", stream=self.ep.stream, cb=self._observe, ordered_consumer=True)
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
        await asyncio.gather(*(self._put(s, "/api/v1/clock", {"now": now.isoformat()}) for s in SERVICES))
        new: list[str] = []
        if filing:
            new += await self._drives(day)
            for n, body in enumerate(self.plan.filings.get(day, [])):
                new.append(await self._file(body, f"sim{self.seed}-{day}-{n}", day))
            for v in (v for v in self.plan.visits if v.day == day):
                answer = await self._post("intake", "/api/v1/visits", {
                    "cadre_name": "驻村干部", "cadre_unit": v.township, "township": v.township, "village": v.village,
                    "visited_on": day.isoformat(), "households_visited": v.households, "problems": v.problems},
                    key=f"sim{self.seed}-visit-{day}")
                for c in answer["cases"]:
                    new.append(self._track(c["case_number"], "night_visit", day, c["query_code"]))
        await self._until_placed(new)
        await self._triage()
        await self._observed(day)
        for action in sorted(self.todo.pop(day, []), key=lambda a: (a[1], a[0])):
            await self._act(day, *action)
        await self._observed(day)
        await self.settled(("routing", "supervision"))
        await self._post("supervision", "/api/v1/sweep", None, who="supervisor")

    # --- filing ---------------------------------------------------------------------------------

    async def _file(self, body: dict, key: str, day: date) -> str:
        # A delegated case is filed by its agent, with the agent's own token; the rest at the desk.
        who = f"agent:{body['delegation']['agent_id']}" if body["channel"] == "delegated" else "clerk"
        answer = await self._post("intake", "/api/v1/cases", body, key=key, who=who)
        return self._track(answer["case_number"], body["channel"], day, answer["query_code"])

    def _track(self, case_id: str, channel: str, day: date, code: str) -> str:
        self.cases[case_id] = Tracked(case_id, channel, day, code)
        return case_id

    async def _drives(self, day: date) -> list[str]:
        new = []
        for n, drive in enumerate(self.plan.drives):
            if drive.opens == day:
                opened = await self._post("intake", "/api/v1/drives", {
                    "kind": drive.kind, "name": drive.name, "starts_on": drive.opens.isoformat(),
                    "ends_on": drive.closes.isoformat()})
                drive.drive_id = opened["drive_id"]  # type: ignore[attr-defined]
                rows = [{"row": i + 2, "values": _row(r)} for i, r in enumerate(drive.rows)]
                report = await self._post("intake", f"/api/v1/drives/{opened['drive_id']}/rows",
                                          {"source": f"sim{self.seed}d{n}x{day:%Y%m%d}", "rows": rows})
                for _, number in sorted(report["case_numbers"].items(), key=lambda x: int(x[0])):
                    new.append(self._track(number, "screening", day, ""))
            if drive.closes == day and getattr(drive, "drive_id", None):
                await self._post("intake", f"/api/v1/drives/{drive.drive_id}/close", None)
        return new

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

    async def _observed(self, day: date) -> None:
        await self.nc.flush()
        while not self.seen.empty():
            self._note(self.seen.get_nowait(), day)

    def _note(self, event: ev.Event, day: date | None = None) -> None:
        self.placed.add(event.case_id)
        case = self.cases.get(event.case_id)
        if case is None:
            return
        if isinstance(event, ev.CaseAssigned):
            today = day or self.clock.now().astimezone(CHINA_TZ).date()
            self._plan_unit(case, event.unit, event.role, today)

    def _plan_unit(self, case: Tracked, unit: str, role: str, day: date) -> None:
        rnd = random.Random(f"{self.seed}:{case.case_id}:{unit}:{role}")
        habit = self.plan.habits[unit]
        if role == "co":
            self.todo[day + timedelta(days=1)].append(("sign", case.case_id, unit))
            return
        case.lead = unit
        if not case.returned and rnd.random() < habit.return_rate:
            case.returned = True
            self.todo[day + timedelta(days=1)].append(("return", case.case_id, unit))
            return
        # From tomorrow: what is seen today is seen after today's work is done.
        sign = day + timedelta(days=max(1, rnd.randint(*habit.sign_days)))
        self.todo[sign].append(("sign", case.case_id, unit))
        reply = sign + timedelta(days=max(1, rnd.randint(*habit.reply_days)))
        if rnd.random() < habit.extension_rate:
            self.todo[sign + timedelta(days=10)].append(("extend", case.case_id, unit))
            reply += timedelta(days=20)
        self.todo[reply].append(("reply", case.case_id, unit))

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
        rnd = random.Random(f"{self.seed}:{case_id}:{kind}:{case.replies}")
        self.clock.set(self.clock.now() + timedelta(seconds=1))  # each command after the one before
        try:
            client = await self._unit(unit)
            if kind == "sign":
                await client.sign(case_id)
                case.signed = case.signed or unit == case.lead
            elif kind == "return":
                await client.return_case(case_id, "非本单位职责")
            elif kind == "extend":
                await client.request_extension(case_id, 20, "情况复杂，需延期办理")
                await self.settled(("supervision",))
                await self._post("supervision", f"/api/v1/cases/{case_id}/extension",
                                 {"approved": True, "days": 20, "reason": "同意延期"}, who="supervisor")
            elif kind == "reply":
                await client.reply(case_id, "resolved", "已依法依规办理并答复信访人。")
                case.replies += 1
                case.last_reply, case.answer, case.review_pending = day, None, False
                self.todo[day + timedelta(days=rnd.randint(1, 7))].append(("feedback", case_id, unit))
            elif kind == "feedback":
                await self._resident(case, day, rnd, unit)
            self.events_sent += 1
        except Refused:
            self.refused += 1

    async def _resident(self, case: Tracked, day: date, rnd: random.Random, unit: str) -> None:
        if not case.query_code:  # screened disputes: no query code was handed out
            return
        roll = rnd.random()
        if roll < 0.05:
            return  # no feedback: the case closes after the window
        satisfied = roll < 0.87 or case.reviews > 0
        await self._post("intake", f"/api/v1/cases/{case.case_id}/feedback",
                         {"query_code": case.query_code, "satisfied": satisfied}, who=None)
        case.feedback.append(satisfied)
        case.answer = satisfied
        if not satisfied and rnd.random() < 0.6:
            await self._post("intake", f"/api/v1/cases/{case.case_id}/reviews",
                             {"query_code": case.query_code, "level": "review", "reason": "对答复不满意"}, who=None)
            case.reviews += 1
            case.review_pending = True
            self.todo[day + timedelta(days=rnd.randint(5, 25))].append(("reply", case.case_id, unit))

    async def _unit(self, code: str) -> UnitClient:
        if code not in self.units:
            self.units[code] = await UnitClient(self.ep.nats_url, code, stream=self.ep.stream, clock=self.clock,
                                                creds=self.ep.creds(f"unit_{code}")).__aenter__()
        return self.units[code]

    # --- plumbing -------------------------------------------------------------------------------

    async def _post(self, service: str, path: str, body: dict | None, key: str | None = None,
                    who: str | None = "clerk") -> dict:
        """``who``: whose token the call carries (Endpoints.tokens); None for a resident's call."""
        headers = {"Idempotency-Key": key} if key else {}
        answer = await self.http.post(self.ep.urls[service] + path, json=body, headers={**headers, **self.ep.auth(who)})
        if answer.status_code >= 300:
            raise RuntimeError(f"{service} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

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
