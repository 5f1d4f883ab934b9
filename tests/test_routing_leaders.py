"""Leaders by portfolio (领导包案, leaders.yaml) end to end: an important case gets the county leader in
charge (分管) of its lead unit or category, the least loaded among several, and the bureau can name
another by hand with a reason — an event that supervision follows and that moves the load."""
from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.routing import tables
from shared import events as ev
from shared.settings import Settings
from tests.helpers import STAFF_ID, read_subject, wait_until
from tests.test_routing import assigned, routed, submit


def leaders_of(settings: Settings) -> dict[str, list[ev.LeaderAssigned]]:
    """Every LeaderAssigned in the stream, by case, in order."""
    out: dict[str, list[ev.LeaderAssigned]] = {}
    for _, e in read_subject(settings.nats_url, "cases.leader_assigned"):
        out.setdefault(e.case_id, []).append(e)
    return out


def load(routing_db: Engine) -> dict[str, int]:
    lc = tables.leader_cases
    with routing_db.connect() as conn:
        rows = conn.execute(select(lc.c.leader_id).where(lc.c.open)).scalars().all()
    return {leader: rows.count(leader) for leader in set(rows)}


def test_a_collective_case_in_forestrys_field_gets_the_leader_in_charge_of_forestry(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="forestry_rights", township="xishan", village="xishan-songling", people_count=9,
                    title="两村山林界址纠纷", content="松岭村和竹园村为山林界址争了多年，九户人一起来反映。")
    assert [(e.unit, e.role) for e in assigned(settings, [intake_db, routing_db], number)][0] == ("forestry", "lead")
    [leader] = leaders_of(settings)[number]
    assert (leader.leader_id, leader.assigned_by, leader.reasons) == ("leader06", "portfolio", ["collective"])
    assert "unit forestry" in leader.note and "category forestry_rights" in leader.note
    assert routed(routing, number)["leader"] == "leader06"


def test_among_several_leaders_in_charge_the_least_loaded_takes_the_case_and_with_none_in_charge_any(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    # 征地拆迁: the 县委副书记 (leader03) and the 副县长 for natural resources (leader06) are both in charge.
    numbers = []
    for i in range(3):
        numbers.append(submit(intake, n=40 + i, category="land_acquisition", people_count=6,
                              title=f"征地补偿款第{i}批没发", content="村里六户人的征地补偿款一直没发到位。"))
        wait_until(lambda n=numbers[-1]: n in leaders_of(settings), what=f"case {i} to get its leader")
    got = [leaders_of(settings)[n][0] for n in numbers]
    assert [e.leader_id for e in got] == ["leader03", "leader06", "leader03"]  # a tie goes by code
    assert all(e.assigned_by == "portfolio" and "leader03, leader06" in e.note for e in got)
    assert load(routing_db) == {"leader03": 2, "leader06": 1}
    # Escalated (越级访), neither a lead unit nor a category yet (a clerk must read it first): no portfolio
    # covers it, the least loaded of all leaders takes it (ties by code).
    unclear = submit(intake, n=50, category=None, escalated=True, title="投诉林业站",
                     content="投诉林业站，采伐证申请三个月了还没批下来。")
    wait_until(lambda: unclear in leaders_of(settings), what="the unclear case's leader")
    [leader] = leaders_of(settings)[unclear]
    assert (leader.leader_id, leader.assigned_by, leader.reasons) == ("leader01", "load", ["escalated"])
    assert [t["reason"] for t in routing.get("/api/v1/triage").json()] == ["accusation_unclear"]


def test_the_bureau_names_another_leader_with_a_reason_supervision_follows_and_the_load_moves(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings, intake_db: Engine,
        routing_db: Engine, token: Callable[..., dict]) -> None:
    number = submit(intake, category="forestry_rights", people_count=12, title="十二户联名反映林地被占",
                    content="十二户人联名反映承包林地被外村人占用。")
    wait_until(lambda: number in leaders_of(settings), what="the case's leader")
    assert leaders_of(settings)[number][0].leader_id == "leader06"
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json().get("leader") == "leader06",
               what="supervision to know the first leader")

    named = routing.post(f"/api/v1/routing/{number}/leader",
                         json={"leader_id": "leader05", "reason": "涉及两村群体性冲突苗头，由政法委书记包案"})
    assert named.status_code == 200, named.text
    assert named.json()["leader"] == "leader05"
    wait_until(lambda: len(leaders_of(settings)[number]) == 2, what="the bureau's LeaderAssigned")
    first, second = leaders_of(settings)[number]
    assert (second.leader_id, second.assigned_by, second.replaces, second.reasons) == (
        "leader05", "bureau", "leader06", first.reasons)
    assert second.note == "涉及两村群体性冲突苗头，由政法委书记包案"
    assert (second.actor.kind, second.actor.id) == ("supervisor", STAFF_ID)
    assert load(routing_db) == {"leader05": 1}  # the load moved with the case
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json().get("leader") == "leader05",
               what="supervision to follow the bureau's choice")
    # The new leader sees the case; the old one no longer does.
    assert routing.get(f"/api/v1/routing/{number}", headers=token("leader", leader_id="leader05")).status_code == 200
    assert routing.get(f"/api/v1/routing/{number}", headers=token("leader", leader_id="leader06")).status_code == 404
    assert supervision.get(f"/api/v1/cases/{number}", headers=token("leader", leader_id="leader05")).status_code == 200

    # What the bureau cannot do: an unknown leader, the leader the case has, a case routing never saw.
    unknown = routing.post(f"/api/v1/routing/{number}/leader", json={"leader_id": "nobody", "reason": "x"})
    assert unknown.status_code == 422 and unknown.json()["fields"][0]["field"] == "leader_id"
    assert routing.post(f"/api/v1/routing/{number}/leader",
                        json={"leader_id": "leader05", "reason": "x"}).status_code == 409
    assert routing.post("/api/v1/routing/QS-2026-999999/leader",
                        json={"leader_id": "leader05", "reason": "x"}).status_code == 404
    assert routing.post(f"/api/v1/routing/{number}/leader", json={"leader_id": "leader04"}).status_code == 422
    # Only the supervision office names one (shared/access.py).
    for role, bound in (("clerk", {"staff_id": "desk1"}), ("unit", {"unit": "forestry"}),
                        ("leader", {"leader_id": "leader05"})):
        refused = routing.post(f"/api/v1/routing/{number}/leader", json={"leader_id": "leader04", "reason": "x"},
                               headers=token(role, **bound))
        assert refused.status_code == 403, role
    assert len(leaders_of(settings)[number]) == 2
