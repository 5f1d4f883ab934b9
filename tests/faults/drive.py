"""A holiday screening drive on production's shape, for the drive test and the throughput figures.

The system: a 3-node NATS cluster (streams R3, fsync before each ack), ``intake_replicas`` intake
processes behind a round-robin balancer (``balancer.py``), ``routing_replicas`` routing processes,
supervision and scoring; SQLite files or PostgreSQL schemas (``System``).

Cases come in two ways, as in a drive: clerks' clients posting over HTTP (``load.Load``: an
Idempotency-Key each, the same key again after a 503 or a connection error), and a drive file
imported with the real ``xinfang import`` command, run again as the README tells a clerk to when it
stops part way (exit 3). The rows it got in are then read back by sending the same rows once more:
each answer is ``already_imported`` with the row's case number, so nothing may be created then.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text

from bench.balancer import RoundRobin
from services.intake import importer
from shared.directory import load_directory
from shared.settings import Settings
from tests.faults.invariants import Findings, _examples
from tests.faults.load import CATEGORIES
from tests.faults.system import System
from tests.helpers import resident_id

IMPORT_CHUNK = 250  # rows per request of `xinfang import` (its default is 500): more requests to cut


def start(root: Path, database: str, postgres_url: str | None, nats_users: Path, intake_replicas: int = 3,
          routing_replicas: int = 2) -> tuple[System, RoundRobin]:
    """The system, healthy, and the balancer in front of its intake replicas."""
    system = System(root, database, postgres_url, nats_users, cluster=True)
    try:
        system.start()  # the cluster formed, the streams declared R3 as admin, one process of each service
        more = ["intake"] * (intake_replicas - 1) + ["routing"] * (routing_replicas - 1)
        if more:
            system.start_replicas(more, new_ports=True)
        balancer = RoundRobin([r.port for r in system.replicas["intake"]])
        balancer.start()
    except BaseException:
        system.stop()
        raise
    return system, balancer


def open_drive(client: httpx.Client, name: str = "2026年春节前矛盾纠纷集中排查") -> str:
    answer = client.post("/api/v1/drives", json={"kind": "special", "name": name, "starts_on": "2026-03-01",
                                                  "ends_on": "2026-03-31"})
    assert answer.status_code == 201, answer.text
    return answer.json()["drive_id"]


def drive_file(path: Path, rows: int, settings: Settings) -> Path:
    """A drive's CSV as a township office saves it (UTF-8 with BOM, Chinese headers): ``rows``
    disputes, every one valid, spread over the county's townships and villages."""
    directory = load_directory(settings.config_dir)
    places = [(t.code, v.code) for t in directory.townships.values() for v in t.villages]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["序号", "姓名", "身份证号", "联系电话", "乡镇", "村(社区)", "纠纷类别", "纠纷事由", "基本情况", "涉及人数"])
    for n in range(1, rows + 1):
        township, village = places[n * 7 % len(places)]
        # Residents of their own (born 1975) so the import's cases are not repeats of the HTTP load's.
        writer.writerow([n, "李秀英", resident_id(n, born="19750505"), "13900001111", township, village,
                         CATEGORIES[n % len(CATEGORIES)], f"排查发现第{n}号纠纷：{township}",
                         f"春节前排查中发现的第{n}号矛盾纠纷，当事人要求尽快调处。", 6 if n % 25 == 0 else 1])
    path.write_bytes(out.getvalue().encode("utf-8-sig"))
    return path


@dataclass
class Import:
    """What ``xinfang import`` did with the drive file, run after run."""

    path: Path
    drive_id: str
    exit_codes: list[int] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)  # each run's last lines
    accepted: dict[str, str] = field(default_factory=dict)  # the row's key in intake → its case number
    took_s: float = 0.0

    @property
    def source(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:32]

    def key(self, row: int) -> str:
        """The row's idempotency key as intake stores it (services/intake/drives.py)."""
        return f"import:{self.drive_id}:{self.source}:{row}"


def run_import(imp: Import, url: str, token: str, give_up_s: float = 600.0) -> None:
    """``xinfang import FILE --drive D`` against ``url`` until it exits 0; only exit 3 (stopped part
    way) and 2 (nothing in yet: intake could not be reached) are run again, as a clerk would."""
    started = time.monotonic()
    while True:
        run = subprocess.run([sys.executable, "-m", "services.cli", "import", str(imp.path), "--drive", imp.drive_id,
                              "--url", url, "--token", token, "--chunk", str(IMPORT_CHUNK),
                              "--errors", str(imp.path.with_suffix(".errors.csv"))],
                             capture_output=True, text=True, timeout=give_up_s)
        imp.exit_codes.append(run.returncode)
        imp.summaries.append(" | ".join((run.stdout + run.stderr).strip().splitlines()[-2:])[-400:])
        if run.returncode == 0:
            imp.took_s = time.monotonic() - started
            return
        assert run.returncode in (2, 3), f"xinfang import exited {run.returncode}: {imp.summaries[-1]}"
        assert time.monotonic() - started < give_up_s, f"the import did not complete: {imp.summaries}"
        time.sleep(0.5)


def read_back(imp: Import, client: httpx.Client) -> None:
    """Each row's case number, from intake's answer to the same rows sent again: all already in,
    none created (the import is idempotent by row)."""
    sheet = importer.read_file(imp.path.read_bytes(), imp.path.name)
    for part in importer.chunks(sheet.rows, 500):
        for _ in range(30):  # a replica may have gone away under this connection: once more
            try:
                answer = client.post(f"/api/v1/drives/{imp.drive_id}/rows", json={
                    "source": imp.source, "rows": [{"row": n, "values": v} for n, v in part]})
            except httpx.TransportError:
                continue
            if answer.status_code != 503:
                break
            time.sleep(1)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["created"] == 0 and report["already_imported"] == len(part), report
        imp.accepted.update({imp.key(int(row)): number for row, number in report["case_numbers"].items()})
    assert len(imp.accepted) == len(sheet.rows), (len(imp.accepted), len(sheet.rows))


def drive_problems(system: System, numbers: set[str], imp: Import) -> Findings:
    """What the drive test adds to the fault matrix's invariants: each case's timeline at supervision
    has exactly one applied lead CaseAssigned (or one CaseNeedsTriage), and the drive holds exactly
    the rows imported, each once."""
    found = Findings()
    leads: Counter[str] = Counter()
    with system.engine("supervision").connect() as conn:
        rows = conn.execute(text("SELECT case_id, type, payload FROM timeline WHERE status = 'applied' "
                                 "AND type IN ('CaseAssigned', 'CaseNeedsTriage')"))
        for r in rows:
            payload = r.payload if isinstance(r.payload, dict) else json.loads(r.payload)
            if r.type == "CaseNeedsTriage" or payload.get("role") == "lead":
                leads[r.case_id] += 1
    if bad := {c for c in numbers if leads[c] != 1}:
        found.add(f"supervision: not one lead CaseAssigned (or CaseNeedsTriage) on the timeline of "
                  f"{_examples(f'{c}×{leads[c]}' for c in bad)}", bad)
    with system.engine("intake").connect() as conn:
        in_drive = [r.number for r in conn.execute(text("SELECT number FROM cases WHERE drive_id = :d"),
                                                   {"d": imp.drive_id})]
    if sorted(in_drive) != sorted(imp.accepted.values()):
        doubled = [n for n, k in Counter(in_drive).items() if k > 1]
        found.add(f"intake: drive {imp.drive_id} holds {len(in_drive)} cases, {len(imp.accepted)} rows were "
                  f"accepted (doubled {_examples(doubled)}, not accepted {_examples(set(in_drive) - set(imp.accepted.values()))})")
    return found


def stream_leader(system: System) -> int:
    """The index of the node that leads the case stream (the one whose loss forces an election)."""
    async def ask() -> str:
        nc = await system.admin()
        try:
            return (await nc.jetstream(timeout=5).stream_info(system.settings.stream_name)).cluster.leader
        finally:
            await nc.close()
    name = asyncio.run(ask())
    return [n.server_name for n in system.nats.nodes].index(name)
