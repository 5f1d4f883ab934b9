"""A shortened county-year through a fresh system: the self-check passes, and the same seed gives
the same figures."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from services.simulator.model import plan_year
from shared.directory import load_directory
from shared.settings import REPO_ROOT

DIRECTORY = load_directory(REPO_ROOT / "deploy" / "config")


def run(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "simulate", "--seed", "3", "--days", "45",
                           "--extra-days", "25", "--scale", "0.5", "--keep", str(tmp_path / name)],
                          capture_output=True, text=True, timeout=600)


def figures(report: str) -> str:
    """The report without the parts that name where it ran."""
    return report[report.index("# "):report.rindex("\n\n", 0, report.index("cases,"))]


def test_a_shortened_year_passes_its_self_check_and_repeats_exactly_with_the_same_seed(tmp_path: Path) -> None:
    first, second = run(tmp_path, "a"), run(tmp_path, "b")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "self-check passed" in first.stdout
    assert second.returncode == 0, second.stderr[-3000:]
    assert figures(first.stdout) == figures(second.stdout)
    assert re.search(r"共受理信访事项\d+件", first.stdout)


def test_the_plan_covers_every_channel_and_drive_and_is_the_same_for_a_seed() -> None:
    a, b = plan_year(DIRECTORY, 1), plan_year(DIRECTORY, 1)
    channels = {body["channel"] for bodies in a.filings.values() for body in bodies}
    assert channels == {"walk_in", "online", "delegated", "letter", "phone", "referral"}
    assert [d.name for d in a.drives] == [d.name for d in b.drives] and len(a.drives) == 6
    assert sum(len(d.rows) for d in a.drives) == 268 and a.visits and any(v.problems for v in a.visits)
    assert a.filings == b.filings and a.habits == b.habits
    assert plan_year(DIRECTORY, 2).filings != a.filings
    bigger = plan_year(DIRECTORY, 1, scale=3)
    assert sum(map(len, bigger.filings.values())) > 2.5 * sum(map(len, a.filings.values()))
