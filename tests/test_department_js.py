"""The published contract is enough for a department whose system is not Python: ``tests/js/department.mjs``,
written from the README and ``shared/events.py`` alone with the official nats.js packages, follows its
cases through its own durable consumer, signs for and replies to the case assigned to it, and learns
from the system itself (``EventRefused`` on ``cases.refused.<unit>``) that its sign-for of another
unit's case was refused."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared import events as ev
from shared.settings import Settings
from tests.helpers import case_body, read_subject, wait_until

# the department's contract on the bus: the same whatever database the services use: SQLite only
# (tests/conftest.py).
pytestmark = pytest.mark.one_database

JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js, with the department's packages installed from the lock file (once per test session)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript department client needs Node.js 20 or newer")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version} is too old: the JavaScript department client needs Node.js 20 or newer")
    if not installed_as_locked():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: it installs tests/js's packages (npm ci)")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS_DIR} failed:\n{done.stdout}\n{done.stderr}")
    return node


def installed_as_locked() -> bool:
    """Every package of tests/js/package-lock.json is in node_modules at its locked version."""
    locked = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    for path, meta in locked.items():
        manifest = JS_DIR / path / "package.json"
        if path and (not manifest.exists() or json.loads(manifest.read_text()).get("version") != meta["version"]):
            return False
    return True


def submit(intake: TestClient, n: int, **fields) -> str:
    answer = intake.post("/api/v1/cases", json=case_body(n=n, **fields))
    assert answer.status_code == 201, answer.text
    return answer.json()["case_number"]


def timeline(supervision: TestClient, case_id: str) -> list[dict]:
    answer = supervision.get(f"/api/v1/cases/{case_id}/timeline")
    return answer.json() if answer.status_code == 200 else []


def has(steps: list[dict], event: str, unit: str, status: str) -> bool:
    return any((s["event"], s["unit"], s["status"]) == (event, unit, status) for s in steps)


def test_a_department_written_in_javascript_signs_replies_and_learns_of_its_refused_event(
        node: str, intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    ours = submit(intake, 1, category="logging_permit", title="申请采伐自家承包山林木",
                  content="本人承包山林中的杉木已到采伐期，申请办理林木采伐许可。")
    theirs = submit(intake, 2)  # a neighbour dispute: a township matter, 城关镇's
    # Both cases routed and known to supervision, so the wrong sign-for falls on a case in hand.
    wait_until(lambda: has(timeline(supervision, ours), "CaseAssigned", "forestry", "applied"),
               what=f"{ours} assigned to forestry")
    wait_until(lambda: has(timeline(supervision, theirs), "CaseAssigned", "chengguan", "applied"),
               what=f"{theirs} assigned to chengguan")

    run = subprocess.run([node, str(JS_DIR / "department.mjs"), settings.nats_url, "forestry", theirs],
                         capture_output=True, text=True, timeout=120)
    output = f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    print(output)  # shown with -s, or by pytest when the test fails
    assert run.returncode == 0, output
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]

    # What the department saw and did, by its own account.
    assert {"saw": "CaseAssigned", "case_id": ours, "role": "lead"}.items() <= next(
        (x for x in lines if x.get("saw") == "CaseAssigned" and x.get("case_id") == ours), {}).items(), output
    [asked] = [x for x in lines if x.get("asked") == "routing.assignment"]
    assert (asked["case_id"], asked["assigned"], asked["role"]) == (ours, True, "lead"), output
    [signed] = [x for x in lines if x.get("did") == "signed"]
    [replied] = [x for x in lines if x.get("did") == "replied"]
    [wrong] = [x for x in lines if x.get("did") == "signed_not_own"]
    assert signed["case_id"] == replied["case_id"] == ours and wrong["case_id"] == theirs, output
    assert not any(x.get("saw") == "CaseAssigned" and x.get("case_id") == theirs for x in lines), output

    # The refusal came from the system, over the bus, about exactly that event.
    [refused] = [x for x in lines if "refused" in x and not x.get("done")]
    assert refused["refused"] == wrong["event_id"] and refused["case_id"] == theirs, output
    assert (refused["kind"], refused["by"], refused["refused_type"]) == ("refused", "supervision", "UnitSigned"), output
    [(_, stored)] = [(h, e) for h, e in read_subject(settings.nats_url, "cases.refused.forestry")]
    assert isinstance(stored, ev.EventRefused) and stored.event_id == refused["event_id"]
    assert stored.actor == ev.Actor(kind="service", id="supervision")

    # The department's events are what the contract asks for: envelope, subject, Nats-Msg-Id.
    published = {e.event_id: (h, e) for h, e in read_subject(settings.nats_url, "cases.*.forestry")}
    for line, cls in ((signed, ev.UnitSigned), (replied, ev.CaseReplied), (wrong, ev.UnitSigned)):
        headers, event = published[line["event_id"]]
        assert isinstance(event, cls) and headers.get("Nats-Msg-Id") == event.event_id
        assert event.actor == ev.Actor(kind="unit", id="forestry") and event.unit == "forestry"
    assert published[replied["event_id"]][1].result == "resolved"

    # On the system side: the case was signed for and replied to; the other case's sign-for refused.
    wait_until(lambda: has(timeline(supervision, ours), "CaseReplied", "forestry", "applied"),
               what=f"the reply to {ours} applied")
    steps = {s["event_id"]: s for s in timeline(supervision, ours)}
    assert steps[signed["event_id"]]["status"] == steps[replied["event_id"]]["status"] == "applied"
    assert supervision.get(f"/api/v1/cases/{ours}").json()["state"] == "replied"
    other = {s["event_id"]: s for s in timeline(supervision, theirs)}
    assert other[wrong["event_id"]]["status"] == "refused" and "does not hold" in other[wrong["event_id"]]["reason"]
    assert refused["reason"] == other[wrong["event_id"]]["reason"], output  # what the unit was told is the record
    assert has(timeline(supervision, theirs), "CaseAssigned", "chengguan", "applied")
