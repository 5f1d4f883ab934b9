"""A shortened county-year through a fresh system: every step of the lawful procedure is played at
least once, the self-check passes, and the same seed gives the same figures and steps."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace

from services.simulator.check import closes_by, expected_state, procedure_problems
from services.simulator.model import RATES, plan_year
from services.simulator.runner import AT_LEAST, STEPS, Tracked
from shared.directory import load_directory
from shared.policy import CHINA_TZ, load_policy
from shared.settings import REPO_ROOT

DIRECTORY = load_directory(REPO_ROOT / "deploy" / "config")
# Only a repeat petitioner of the plan on a re-reviewed matter may never come up in a short year.
MAY_BE_NONE = {"refused_repeat_filing"}


def run(tmp_path: Path, *names: str) -> list[subprocess.CompletedProcess]:
    """The same shortened year, once per name, side by side (each its own system: nats-server, databases)."""
    args = [sys.executable, "-m", "services.cli", "simulate", "--seed", "3", "--days", "45", "--extra-days", "25",
            "--scale", "0.5", "--keep"]
    started = [(subprocess.Popen([*args, str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True), name) for name in names]
    done = []
    for process, _ in started:
        out, err = process.communicate(timeout=900)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def figures(report: str) -> str:
    """The report without the parts that name where it ran."""
    return report[report.index("# "):report.rindex("\n\n", 0, report.index("cases,"))]


def steps(out: str) -> dict[str, int]:
    """The run's summary: how often each step of the procedure was taken."""
    block = out[out.index("procedure steps taken:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^  (\w+) +(\d+)  ", block, re.M)}


def test_a_shortened_year_plays_every_step_passes_its_self_check_and_repeats_exactly(tmp_path: Path) -> None:
    first, second = run(tmp_path, "a", "b")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "self-check passed" in first.stdout and "SELF-CHECK FAILED" not in first.stderr
    taken = steps(first.stdout)
    assert set(taken) == set(STEPS)
    assert not [s for s, n in taken.items() if n == 0 and s not in MAY_BE_NONE], taken
    # The objections both ways, an extension decided both ways by the head, the whole review chain.
    assert taken["objected"] == taken["objection_approved"] + taken["objection_rejected"]
    assert taken["extension_by_head_api"] + taken["extension_by_unit_system"] <= taken["extension_requested"]
    assert taken["re_review_opinion"] <= taken["re_review"] <= taken["review_opinion"] <= taken["review"]
    assert taken["refiled_refused"] <= taken["re_review_opinion"]
    assert re.search(r"共受理信访事项\d+件", first.stdout)
    assert "以青信联办发〔2026〕1号交办通知交办包案领导和主办单位" in first.stdout  # the special drive's leader cases
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert figures(first.stdout) == figures(second.stdout)
    assert steps(first.stdout) == steps(second.stdout)


def test_the_plan_covers_every_channel_and_drive_and_is_the_same_for_a_seed() -> None:
    a, b = plan_year(DIRECTORY, 1), plan_year(DIRECTORY, 1)
    channels = {body["channel"] for bodies in a.filings.values() for body in bodies}
    assert channels == {"walk_in", "online", "delegated", "letter", "phone", "referral"}
    assert [d.name for d in a.drives] == [d.name for d in b.drives] and len(a.drives) == 8
    # the source document's screening: 268 disputes, 46 of them (the four special periods') leader cases
    assert sum(len(d.rows) for d in a.drives) == 268 and a.visits and any(v.problems for v in a.visits)
    special = [d for d in a.drives if d.kind == "special"]
    assert len(special) == 4 and all(d.period for d in special) and sum(len(d.rows) for d in special) == 46
    ordinary = [r for d in a.drives if d.kind != "special" for r in d.rows]
    assert not any(r["escalated"] or r["backlog"] or r.get("people_count") for r in ordinary)
    assert a.filings == b.filings and a.habits == b.habits
    assert plan_year(DIRECTORY, 2).filings != a.filings
    bigger = plan_year(DIRECTORY, 1, scale=3)
    assert sum(map(len, bigger.filings.values())) > 2.5 * sum(map(len, a.filings.values()))


def test_the_procedure_rates_are_realistic_and_every_forced_path_is_one_of_them() -> None:
    for weights in RATES.values():
        assert abs(sum(weights.values()) - 1) < 1e-9
    assert RATES["acceptance"]["not_accepted"] <= 0.05 and RATES["opinion"]["satisfied"] >= 0.8
    habits = plan_year(DIRECTORY, 1).habits.values()
    assert all(0 < h.objection_rate < 0.1 and 0 < h.extension_rate < 0.2 for h in habits)
    assert sum(h.objection_rate > 0.05 for h in habits) < len(habits) / 2  # a return habit is the exception
    outcomes = {o for weights in RATES.values() for o in weights}
    forced = set(AT_LEAST) - {"objected", "extension_requested", "head_api", "head_unit"}
    assert forced <= outcomes


def test_the_self_check_expects_the_procedure_and_sees_a_step_the_system_did_not_show() -> None:
    sim = SimpleNamespace(policy=load_policy(REPO_ROOT / "deploy" / "config"), cases={}, d=DIRECTORY)
    at = datetime(2026, 3, 2, 9, 0, 5, tzinfo=CHINA_TZ)
    refused = Tracked("QS-2026-000001", "walk_in", date(2026, 3, 1), "ABCD2345", lead="civil", signed=True,
                      acceptance="not_accepted")
    unhappy = Tracked("QS-2026-000002", "walk_in", date(2026, 1, 5), "ABCD2346", lead="civil", signed=True,
                      acceptance="accepted", opinions=["lead"], replied_at=at, feedback=[False], answer=False)
    reviewed = Tracked("QS-2026-000003", "walk_in", date(2026, 1, 5), "ABCD2347", lead="civil", signed=True,
                       acceptance="accepted", opinions=["lead", "review"], requested=["review", "re_review"],
                       reviewers={"review": "county_gov", "re_review": "city_gov"}, replied_at=at, answer=False)
    for c in (refused, unhappy, reviewed):
        sim.cases[c.case_id] = c
    # 不予受理 closes at once; not satisfied, asking for nothing, only after the 30-day review window.
    assert expected_state(sim, refused.case_id, date(2026, 3, 3)) == {"closed", "archived"}
    assert expected_state(sim, unhappy.case_id, date(2026, 3, 31)) == {"replied"}
    assert expected_state(sim, unhappy.case_id, date(2026, 4, 3)) == {"closed", "archived"}
    assert closes_by(sim, unhappy, date(2026, 4, 3)) == "no_review"
    assert expected_state(sim, reviewed.case_id, date(2026, 6, 1)) == {"reopened"}  # the re-review is pending
    reviewed.opinions.append("re_review")
    assert closes_by(sim, reviewed, date(2026, 3, 3)) == "re_reviewed"
    # Each step visible in supervision, or a problem named.
    shown = {"state": "closed", "acceptance": "not_accepted", "lead": "civil", "extension": None, "reviewers": {},
             "review_level": None, "final": True}
    end = date(2026, 3, 3)
    assert procedure_problems(sim, refused, end, shown, [], [{"kind": "not_accept_notice"}], ["not_accepted"]) == []
    wrong = procedure_problems(sim, refused, end, {**shown, "acceptance": None, "final": False}, [], [], [])
    assert len(wrong) == 4 and all(p.startswith("QS-2026-000001: ") for p in wrong), wrong
    # The review answered by the county government, the re-review by the city's; not the unit itself.
    shown = {"state": "closed", "acceptance": "accepted", "lead": "civil", "extension": None, "final": True,
             "reviewers": {"review": "county_gov", "re_review": "city_gov"}, "review_level": "re_review",
             "opinion_level": "re_review", "replied_at": at.isoformat()}
    notices = [{"kind": k} for k in ("accept_notice", "opinion", "review_opinion", "re_review_opinion")]
    assert procedure_problems(sim, reviewed, end, shown, [], notices, ["re_reviewed"]) == []
    reviewed.reviewers["review"] = "civil"
    assert any("the review went to civil" in p for p in procedure_problems(
        sim, reviewed, end, {**shown, "reviewers": reviewed.reviewers}, [], notices, ["re_reviewed"]))
