"""The fault matrix's fixtures: one running system per database (SQLite, and PostgreSQL when
XF_TEST_POSTGRES_URL is set), shared by the faults of ``test_faults.py`` in order, and the summary
printed at the end (fault, cases, recovery seconds). ``XF_FAULTS_KEEP=1`` keeps the PostgreSQL
schemas for a look after a failure (the SQLite files and logs stay in pytest's temporary folder)."""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared import natsauth
from shared.settings import Settings
from tests.faults.invariants import Ledger, check, dead_letters, wait_for_invariants
from tests.faults.load import Load, Run
from tests.faults.system import System

POSTGRES_URL = os.environ.get("XF_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
SUMMARY: list[dict] = []  # one row per fault survived (or not), printed by pytest_terminal_summary


@dataclass
class Matrix:
    database: str
    system: System
    load: Load
    ledger: Ledger = field(default_factory=Ledger)
    broken: bool = False  # the last fault's invariants did not hold

    def begin(self) -> None:
        """After a fault that failed: the cases it left broken are quarantined (left out of the
        later faults' per-case checks, listed on its summary line) and the dead letters it left
        are the new baseline, so each later fault is judged on what it did itself."""
        if not self.broken:
            return
        found = check(self.system, self.load, self.ledger)
        self.ledger.quarantined |= found.broken
        self.ledger.dead_letters = dead_letters(self.system) or Counter()
        failed = [r for r in SUMMARY if r["database"] == self.database and r["recovery_s"] is None]
        if failed and found.broken:
            failed[-1]["note"] = (f"left {len(found.broken)} cases broken ({', '.join(sorted(found.broken)[:5])}); "
                                  "the later faults leave them out")
        self.broken = False

    def settled(self, run: Run, fault_end: float, timeout: float = 120.0) -> float:
        """Wait until the invariants hold; record and return the recovery time from ``fault_end``."""
        row = self._row(run)
        self.broken = True  # also when the load's own checks fail
        assert not run.unexpected, f"{run.fault}: answers no retry could fix: {run.unexpected[:5]}"
        assert not run.missing_retry_after, f"{run.fault}: {run.missing_retry_after} answers 503 without Retry-After"
        row["load_tail_s"] = max(0.0, max(run.accepted_at, default=fault_end) - fault_end)
        row["recovery_s"] = self.holds(fault_end, timeout)
        return row["recovery_s"]

    def holds(self, since: float, timeout: float = 120.0) -> float:
        """Wait until the invariants hold; the seconds from ``since``."""
        self.broken = True
        took = wait_for_invariants(self.system, self.load, self.ledger, since, timeout)
        self.broken = False
        return took

    def _row(self, run: Run) -> dict:
        row = next((r for r in SUMMARY if r["database"] == self.database and r["fault"] == run.fault), None)
        if row is None:
            row = {"database": self.database, "fault": run.fault, "recovery_s": None, "load_tail_s": 0.0, "note": ""}
            SUMMARY.append(row)
        row.update(cases=len(run.accepted), retried=run.retried, replayed=run.replayed,
                   answers={k: v for k, v in sorted(run.answers.items()) if k != "201"})
        return row

    def note(self, run: Run, text: str) -> None:
        """A remark on the fault's summary line (what it measured besides the recovery)."""
        self._row(run)["note"] = text


@pytest.fixture(scope="session")
def nats_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NATS users generated from the directory once (bcrypt is slow on purpose); each system copies them."""
    data = tmp_path_factory.mktemp("nats-users")
    natsauth.ensure(Settings(data_dir=data))
    return natsauth.creds_dir(Settings(data_dir=data))


@pytest.fixture(scope="module", params=DATABASES)
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           nats_users: Path) -> Iterator[Matrix]:
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    system = System(root, request.param, POSTGRES_URL, nats_users)
    try:
        system.start()
        yield Matrix(request.param, system, Load(system.url("intake"), system.headers, f"{request.param}-{time.time_ns()}"))
    finally:
        system.stop(keep_databases=bool(os.environ.get("XF_FAULTS_KEEP")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Per fault: the cases its load posted, the requests the clients retried, the recovery (from
    the fault's end until every invariant held; the load's own last seconds after the fault's end
    in brackets) and the answers other than 201."""
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("fault matrix")
    tr.write_line(f"{'database':<9} {'fault':<52} {'cases':>5} {'retried':>7} {'recovery (load)':>16}  answers other than 201")
    for db in DATABASES:
        rows = [r for r in SUMMARY if r["database"] == db]
        for r in rows:
            recovery = (f"{r['recovery_s']:.1f} s ({r['load_tail_s']:.1f})" if r["recovery_s"] is not None
                        else "FAILED")
            answers = ", ".join(f"{k}×{v}" for k, v in r["answers"].items()) or "-"
            tr.write_line(f"{db:<9} {r['fault']:<52} {r['cases']:>5} {r['retried']:>7} {recovery:>16}  {answers}")
            if r["note"]:
                tr.write_line(f"{'':<10}{'':<4}{r['note']}")
        if rows:
            tr.write_line(f"{db:<9} {'all faults':<52} {sum(r['cases'] for r in rows):>5}")
