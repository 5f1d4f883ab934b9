"""Roles and tokens over HTTP (shared/access.py, shared/tokens.py): every role, no token and a revoked
token against every route of the four services; what a unit, a leader and an agent may see; the
actor of every decision comes from the token; the CLI's token commands."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.runtime import APPS, app_factory
from shared import access, tokens
from shared.access import ROLES
from shared.clock import ManualClock
from shared.db import make_engine
from shared.http import api_routes, route_keys
from shared.settings import Settings
from tests.helpers import case_body, outbox_pending, table_counts, wait_until

# SQLite only (tests/conftest.py): who may call what is decided by the token store and the role table, before
# any database; the schema fuzzing (make fuzz) calls every route on PostgreSQL too.
pytestmark = pytest.mark.one_database

PRINCIPALS = ("no token", "revoked", *ROLES)


@dataclass
class World:
    """Four services in time-travel mode, a token of each role, and a case of each kind to call with."""

    clients: dict[str, TestClient]
    engines: dict[str, Engine]
    auth: dict[str, dict[str, str]]  # principal → headers
    clock: ManualClock
    settings: Settings
    ids: dict[str, str] = field(default_factory=dict)
    n: int = 100

    def call(self, service: str, method: str, path: str, who: str, **kw) -> object:  # noqa: ANN003
        return self.clients[service].request(method, path, headers={**kw.pop("headers", {}), **self.auth[who]}, **kw)

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: table_counts(e) for s, e in self.engines.items()}

    def settled(self) -> dict[str, dict[str, int]]:
        """Table counts once every outbox is empty and two looks a moment apart agree."""
        last: list = [None]

        def still() -> bool:
            if any(outbox_pending(e) for e in self.engines.values()):
                return False
            now = self.counts()
            same, last[0] = now == last[0], now
            return same
        wait_until(still, timeout=30, what="the system to settle")
        return last[0]

    def next_n(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture
def world(settings: Settings, clock: ManualClock, token: Callable[..., dict]) -> Iterator[World]:
    s = settings.model_copy(update={"mode": "test"})  # time travel: the clock routes exist too
    with ExitStack() as stack:
        clients = {svc: stack.enter_context(TestClient(app_factory(svc)(s, **({"clock": clock} if svc == "supervision"
                                                                            else {}))))
                   for svc in APPS}
        engines = {svc: make_engine(s.db_url(svc)) for svc in APPS}
        stack.callback(lambda: [e.dispose() for e in engines.values()])
        revoked_record, revoked = tokens.create(s, "clerk", staff_id="gone1")
        tokens.revoke(s, revoked_record.id)
        auth = {"no token": {}, "revoked": {"Authorization": f"Bearer {revoked}"},
                "clerk": token("clerk", staff_id="desk1"), "supervisor": token("supervisor", staff_id="office1"),
                "ops": token("ops"), "agent": token("agent", agent_id="agent001"),
                "unit": token("unit", unit="chengguan"), "unit_head": token("unit_head", unit="chengguan")}
        w = World(clients, engines, auth, clock, s)
        for svc in APPS:
            wait_until(lambda c=clients[svc]: c.get("/readyz").status_code == 200, what=f"{svc} to be ready")
        yield w


def prepare(w: World) -> None:
    """A collective case in 城关镇 (so it has a leader), an agent's case, one in triage, two drives, an
    overdue sign-for and a notice about it."""
    case = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(n=1, people_count=6)).json()
    w.ids.update(case=case["case_number"], code=case["query_code"], year=case["case_number"].split("-")[1])
    agent_case = w.call("intake", "POST", "/api/v1/cases", "agent", json=case_body("delegated", n=2)).json()
    w.ids["agent_case"] = agent_case["case_number"]
    unclear = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(
        n=3, category=None, title="有事反映", content="请领导关注一下这件事情。")).json()
    w.ids["triage_case"] = unclear["case_number"]
    for name in ("drive", "drive_to_close"):
        w.ids[name] = w.call("intake", "POST", "/api/v1/drives", "clerk", json={
            "kind": "quarterly", "name": f"排查{name}", "starts_on": "2026-01-01", "ends_on": "2026-03-31"}).json()["drive_id"]

    def routed() -> bool:
        why = w.call("routing", "GET", f"/api/v1/routing/{w.ids['case']}", "clerk")
        return why.status_code == 200 and why.json()["leader"] is not None
    wait_until(routed, what="the case to be routed with a leader")
    w.ids["leader"] = w.call("routing", "GET", f"/api/v1/routing/{w.ids['case']}", "clerk").json()["leader"]
    wait_until(lambda: any(t["case_id"] == w.ids["triage_case"]
                           for t in w.call("routing", "GET", "/api/v1/triage", "clerk").json()), what="triage")
    wait_until(lambda: w.call("supervision", "GET", f"/api/v1/cases/{w.ids['case']}", "clerk").json().get("leader")
               == w.ids["leader"], what="supervision to know the leader")
    w.auth["leader"] = {"Authorization": "Bearer " + tokens.create(w.settings, "leader", leader_id=w.ids["leader"])[1]}
    w.clock.advance(timedelta(days=5))  # the 3-day sign-for is overdue
    assert w.call("supervision", "POST", "/api/v1/sweep", "supervisor").status_code == 200
    notice = w.call("supervision", "POST", "/api/v1/notices", "supervisor", json={
        "units": ["chengguan"], "demands": "请立即签收。", "reply_by": "2030-12-31"})
    assert notice.status_code == 201, notice.text
    w.ids["notice"] = notice.json()["notice_id"]
    meeting = w.call("supervision", "POST", "/api/v1/meetings", "supervisor", json=MEETING | {"case_ids": [w.ids["case"]]})
    assert meeting.status_code == 201, meeting.text
    w.ids["meeting"] = meeting.json()["meeting_id"]


MEETING = {"held_on": "2026-03-02", "kind": "prominent_problem", "topic": "征地补偿", "units": ["chengguan"],
           "decisions": [{"text": "一周内完成入户核查", "unit": "chengguan", "due_on": "2030-12-31"}]}


def sample(w: World, service: str, key: str, who: str) -> tuple[str, str, dict]:
    """A well-formed request of the route for ``who`` (a scoped role asks about its own things)."""
    method, template = key.split(" ", 1)
    ids = w.ids
    values = {"number": ids["case"], "case_id": ids["case"], "drive_id": ids["drive"], "notice_id": ids["notice"],
              "period": ids["year"], "kind": "md", "fmt": "md", "doc_id": "none", "meeting_id": ids["meeting"], "n": 1}
    if who == "agent" and key == "GET /api/v1/cases/{number}":
        values["number"] = ids["agent_case"]  # its own
    if key.endswith("/close") and service == "intake":
        values["drive_id"] = ids["drive_to_close"]
    if key == "POST /api/v1/periods/{period}/close":
        values["period"] = "2020"
    if key == "POST /api/v1/triage/{case_id}/decision":
        values["case_id"] = ids["triage_case"]
    path = template.replace("{kind}", "md").replace("{fmt}", "md").format(**values)
    kw: dict = {}
    n = w.next_n()
    body = {
        "POST /api/v1/cases": case_body("delegated" if who == "agent" else "walk_in", n=n),
        "POST /api/v1/visits": {"cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan",
                                "village": "chengguan-heping", "visited_on": "2026-03-02", "households_visited": 3,
                                "problems": []},
        "POST /api/v1/drives": {"kind": "quarterly", "name": f"排查{n}", "starts_on": "2026-01-01",
                                "ends_on": "2026-03-31"},
        "POST /api/v1/drives/{drive_id}/rows": {"source": f"source{n:04d}", "rows": [{"row": 2, "values": {
            "name": "张三", "township": "chengguan", "title": "土地纠纷", "content": "两户争地"}}]},
        "POST /api/v1/cases/{number}/feedback": {"query_code": ids["code"], "satisfied": True},
        "POST /api/v1/cases/{number}/reviews": {"query_code": ids["code"], "level": "review", "reason": "不满意"},
        "PUT /api/v1/clock": {"now": (w.clock.now() + timedelta(minutes=n)).isoformat()},
        "POST /api/v1/triage/{case_id}/decision": {"unit": "chengguan", "reason": "研判", "decided_by": "forged"},
        "POST /api/v1/routing/explain": {"channel": "walk_in", "township": "chengguan", "title": "邻居纠纷"},
        "POST /api/v1/cases/{case_id}/extension": {"approved": True, "days": 10, "reason": "同意"},
        "POST /api/v1/notices": {"units": ["chengguan"], "demands": "请办理。", "reply_by": "2030-12-31"},
        "POST /api/v1/notices/{notice_id}/replies": {"unit": "chengguan", "text": "已签收办理"},
        "POST /api/v1/progress": {"case_id": ids["case"], "query_code": ids["code"]},
        "POST /api/v1/progress/documents/{doc_id}.docx": {"case_id": ids["case"], "query_code": ids["code"]},
        "POST /api/v1/cases/{case_id}/objection": {"unit": "chengguan", "approved": True, "reason": "核实"},
        "POST /api/v1/clock/advance": {"hours": 1},
        "POST /api/v1/periods/{period}/close": {"closed_by": "forged"},
        "POST /api/v1/meetings": MEETING,
        "POST /api/v1/meetings/{meeting_id}/decisions/{n}/done": {"note": "已落实"},
    }.get(key)
    if body is not None:
        kw["json"] = body
    if key == "POST /api/v1/drives/{drive_id}/import":
        kw["files"] = {"file": ("d.csv", "name,township,title,content\n李四,chengguan,宅基地纠纷,两户争执\n".encode(),
                                "text/csv")}
    if key in ("GET /api/v1/cases", "GET /api/v1/due", "GET /api/v1/overdue") and who != "leader":
        kw["params"] = {"unit": "chengguan"}
    return method, path, kw


def every_route(w: World) -> list[tuple[str, str]]:
    """(service, "METHOD /path") of every route the four running apps have."""
    return [(svc, key) for svc, client in w.clients.items()
            for route in api_routes(client.app.routes) for key in route_keys(route)]


def allowed(service: str, key: str, who: str) -> bool:
    if key in access.OPEN:
        return True
    rule = access.rule(service, key)
    return rule.public or who in rule.roles


def test_every_role_no_token_and_a_revoked_token_against_every_route(world: World) -> None:
    w = world
    prepare(w)
    routes = every_route(w)
    # The table and the apps name the same routes: none is missing, none is left over.
    assert {(svc, k) for svc, k in routes if k not in access.OPEN} == {
        (svc, k) for svc, rs in access.TABLE.items() for k in rs}

    # Refused first, on a settled system: 401 without a valid token, 403 for a role the table does not
    # name; and nothing changes anywhere — no row, no counter, no event queued.
    before = w.settled()
    refusals = 0
    for svc, key in routes:
        for who in PRINCIPALS:
            if allowed(svc, key, who):
                continue
            method, path, kw = sample(w, svc, key, who)
            answer = w.call(svc, method, path, who, **kw)
            expected = 401 if who in ("no token", "revoked") else 403
            assert answer.status_code == expected, (svc, key, who, answer.status_code, answer.text)
            assert answer.json()["error"] == {401: "unauthorized", 403: "forbidden"}[expected]
            if who == "revoked":
                assert "revoked" in answer.json()["message"]
            refusals += 1
    assert refusals > 150
    assert w.settled() == before

    # Allowed: a success or a domain answer (404, 409, 422 …), never 401/403 and never a 5xx.
    for svc, key in routes:
        for who in PRINCIPALS:
            if not allowed(svc, key, who):
                continue
            method, path, kw = sample(w, svc, key, who)
            answer = w.call(svc, method, path, who, **kw)
            assert answer.status_code not in (401, 403) and answer.status_code < 500, (
                svc, key, who, answer.status_code, answer.text)


def test_a_unit_sees_only_cases_assigned_to_it_never_another_units_nor_one_accusing_it(world: World) -> None:
    w = world
    w.auth["forestry"] = {"Authorization": "Bearer " + tokens.create(w.settings, "unit", unit="forestry")[1]}
    theirs = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(n=1)).json()["case_number"]
    own = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(
        n=2, category="logging_permit", title="申请采伐自家承包山林木")).json()["case_number"]
    accusing = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(
        n=3, category="logging_permit", title="举报县林业局违规发放采伐许可", accused_units=["forestry"])).json()["case_number"]
    for number in (theirs, own, accusing):
        wait_until(lambda n=number: w.call("supervision", "GET", f"/api/v1/cases/{n}", "clerk").json().get("lead")
                   is not None, what=f"{number} to be assigned")
    leads = {n: w.call("supervision", "GET", f"/api/v1/cases/{n}", "clerk").json()["lead"] for n in (theirs, own, accusing)}
    assert leads[theirs] == "chengguan" and leads[own] == "forestry" and leads[accusing] not in ("forestry", None)
    w.clock.advance(timedelta(days=5))
    w.call("supervision", "POST", "/api/v1/sweep", "supervisor")

    for number in (theirs, accusing):  # like a case that does not exist: 404, the same answer
        for svc, path in (("supervision", f"/api/v1/cases/{number}"), ("supervision", f"/api/v1/cases/{number}/timeline"),
                          ("routing", f"/api/v1/routing/{number}")):
            answer = w.call(svc, "GET", path, "forestry")
            missing = w.call(svc, "GET", path.replace(number, "QS-2026-999999"), "forestry")
            assert answer.status_code == missing.status_code == 404, (path, answer.text)
            assert answer.json()["message"] == missing.json()["message"].replace("QS-2026-999999", number)
    assert w.call("supervision", "GET", f"/api/v1/cases/{own}", "forestry").json()["lead"] == "forestry"
    assert w.call("routing", "GET", f"/api/v1/routing/{own}", "forestry").json()["assignments"][0]["unit"] == "forestry"
    steps = w.call("supervision", "GET", f"/api/v1/cases/{own}/timeline", "forestry").json()
    assert [s["event"] for s in steps][:2] == ["CaseReceived", "CaseAssigned"]
    assert steps[0]["actor"] == {"kind": "clerk"}  # another's step: its kind, not its id

    listed = {c["case_id"] for c in w.call("supervision", "GET", "/api/v1/cases", "forestry").json()}
    assert own in listed and not listed & {theirs, accusing}
    for path in ("/api/v1/due?days=30", "/api/v1/overdue"):
        seen = {d["case_id"] for d in w.call("supervision", "GET", path, "forestry").json()}
        assert not seen & {theirs, accusing}
    assert own in {d["case_id"] for d in w.call("supervision", "GET", "/api/v1/overdue", "forestry").json()}
    other = w.call("supervision", "GET", "/api/v1/cases?unit=chengguan", "forestry")
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    # Nor through the routes a unit may not call at all.
    for svc, path in (("intake", f"/api/v1/cases/{theirs}"), ("routing", "/api/v1/triage"),
                      ("scoring", f"/api/v1/reports/{theirs.split('-')[1]}"), ("supervision", "/api/v1/notices")):
        assert w.call(svc, "GET", path, "forestry").status_code == 403


def test_a_leader_sees_the_cases_it_leads_and_an_agent_the_cases_it_filed(world: World) -> None:
    w = world
    prepare(w)
    led, plain = w.ids["case"], w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(n=9)).json()["case_number"]
    wait_until(lambda: w.call("supervision", "GET", f"/api/v1/cases/{plain}", "clerk").status_code == 200,
               what="the plain case")
    assert w.call("supervision", "GET", f"/api/v1/cases/{led}", "leader").json()["leader"] == w.ids["leader"]
    assert w.call("routing", "GET", f"/api/v1/routing/{led}", "leader").status_code == 200
    assert w.call("supervision", "GET", f"/api/v1/cases/{led}/timeline", "leader").status_code == 200
    for svc, path in (("supervision", f"/api/v1/cases/{plain}"), ("supervision", f"/api/v1/cases/{plain}/timeline"),
                      ("routing", f"/api/v1/routing/{plain}")):
        assert w.call(svc, "GET", path, "leader").status_code == 404
    assert {c["case_id"] for c in w.call("supervision", "GET", "/api/v1/cases", "leader").json()} == {led}

    mine = w.call("intake", "GET", f"/api/v1/cases/{w.ids['agent_case']}", "agent")
    assert mine.status_code == 200 and mine.json()["delegation"]["agent_id"] == "agent001"
    assert w.call("intake", "GET", f"/api/v1/cases/{led}", "agent").status_code == 404
    # An agent files delegated cases naming itself only.
    for body in (case_body("walk_in", n=20), case_body("delegated", n=21, delegation={
            "agent_id": "agent002", "service_type": "forestry_logging_permit"})):
        refused = w.call("intake", "POST", "/api/v1/cases", "agent", json=body)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


def test_the_actor_of_every_decision_is_the_tokens_never_what_the_caller_writes(world: World) -> None:
    w = world
    prepare(w)
    # The clerk: the token's staff id, whatever header the caller adds.
    case = w.call("intake", "POST", "/api/v1/cases", "clerk", json=case_body(n=30),
                  headers={"X-Staff-Id": "forged"}).json()["case_number"]
    wait_until(lambda: w.call("supervision", "GET", f"/api/v1/cases/{case}/timeline", "clerk").status_code == 200,
               what="the timeline")
    steps = w.call("supervision", "GET", f"/api/v1/cases/{case}/timeline", "clerk").json()
    assert steps[0]["actor"] == {"kind": "clerk", "id": "desk1"}
    agent_steps = w.call("supervision", "GET", f"/api/v1/cases/{w.ids['agent_case']}/timeline", "clerk").json()
    assert agent_steps[0]["actor"] == {"kind": "agent", "id": "agent001"}
    # The supervision office: the triage decision, the notice, the period's close.
    decided = w.call("routing", "POST", f"/api/v1/triage/{w.ids['triage_case']}/decision", "supervisor",
                     json={"unit": "chengguan", "reason": "研判", "decided_by": "forged"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["assignments"][-1]["decided_by"] == "office1"
    from services.scoring import tables as scoring_tables
    from services.supervision import tables as sup_tables
    with w.engines["supervision"].connect() as conn:
        assert conn.execute(select(sup_tables.notices.c.issued_by)).scalars().all() == ["office1"]
    assert w.call("scoring", "POST", "/api/v1/periods/2020/close", "supervisor",
                  json={"closed_by": "forged"}).status_code == 200
    w.settled()
    with w.engines["scoring"].connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(scoring_tables.outbox))]
    published = [r["payload"].decode() for r in rows]
    assert any('"id":"office1"' in p.replace(" ", "") for p in published) and not any("forged" in p for p in published)


def test_a_token_made_by_the_cli_counts_at_once_and_a_revoked_one_at_once_too(world: World) -> None:
    w = world
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("XF_")}, "XF_DATA_DIR": str(w.settings.data_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", "token", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    made = cli("create", "--role", "unit", "--unit", "forestry", "--note", "林业局信访股")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("xf_") and "\n" not in secret and "unit (unit forestry)" in made.stderr
    headers = {"Authorization": f"Bearer {secret}"}
    sup = w.clients["supervision"]
    assert sup.get("/api/v1/cases", headers=headers).status_code == 200  # no restart
    listed = cli("list")
    assert "forestry" in listed.stdout and secret not in listed.stdout and "林业局信访股" in listed.stdout
    stored = tokens.store_path(w.settings)
    assert secret not in stored.read_text() and (stored.stat().st_mode & 0o777) == 0o600
    token_id = next(line.split()[0] for line in listed.stdout.splitlines() if "forestry" in line)
    assert cli("revoke", token_id).returncode == 0
    answer = sup.get("/api/v1/cases", headers=headers)
    assert answer.status_code == 401 and "revoked" in answer.json()["message"]
    assert "revoked" in cli("list").stdout

    for bad, why in ((["--role", "unit"], "needs --unit"), (["--role", "unit", "--unit", "atlantis"], "unknown unit"),
                     (["--role", "clerk"], "needs --staff"), (["--role", "ops", "--unit", "forestry"], "does not apply"),
                     (["--role", "leader", "--leader", "nobody"], "unknown leader")):
        refused = cli("create", *bad)
        assert refused.returncode == 2 and why in refused.stderr, (bad, refused.stderr)
    assert cli("roles").stdout == access.markdown()


def test_a_token_carries_one_role_unless_the_roles_are_unscoped_ones(settings: Settings) -> None:
    with pytest.raises(tokens.TokenError, match="carries that role alone"):
        tokens.create(settings, ["unit", "clerk"], unit="forestry", staff_id="x")
    record, _ = tokens.create(settings, ["clerk", "supervisor"], staff_id="both")
    assert record.roles == ["clerk", "supervisor"]


def test_a_service_with_a_route_not_in_the_table_or_without_its_guard_does_not_start() -> None:
    from fastapi import APIRouter, FastAPI

    from shared.http import check_guarded

    unguarded = APIRouter(prefix="/api/v1")
    unguarded.get("/triage")(lambda: [])  # in the table, but carries no guard
    app = FastAPI()
    app.include_router(unguarded)
    with pytest.raises(RuntimeError, match="does not carry its guard"):
        check_guarded(app, "routing")
    unknown = FastAPI()
    unknown.get("/api/v1/secret")(lambda: {})
    with pytest.raises(KeyError, match="not in shared/access.py"):
        check_guarded(unknown, "routing")


def test_the_readmes_role_table_is_the_access_table() -> None:
    from shared.settings import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert access.markdown() in readme, "paste `xinfang token roles` into README's \"Roles and tokens\""
