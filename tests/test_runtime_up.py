"""`xinfang up` on a fresh data folder: embedded NATS, migrations, intake; a POST's event arrives once;
Ctrl-C stops everything cleanly."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import nats

from shared.db import make_engine
from tests.helpers import case_body, free_port, outbox_pending, read_subject, wait_until


def test_up_serves_a_case_whose_event_a_subscriber_gets_exactly_once_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    nats_port, intake_port, routing_port, supervision_port, scoring_port = (free_port() for _ in range(5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
    env.update({"XF_DATA_DIR": str(tmp_path / "var"), "XF_EMBEDDED_NATS_PORT": str(nats_port),
                "XF_EMBEDDED_NATS_MONITOR_PORT": str(free_port()), "XF_INTAKE_PORT": str(intake_port),
                "XF_ROUTING_PORT": str(routing_port), "XF_SUPERVISION_PORT": str(supervision_port),
                "XF_SCORING_PORT": str(scoring_port),
                "XF_LOG_LEVEL": "WARNING"})
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output = []
    try:
        while "Ctrl-C stops everything." not in "".join(output):
            output.append(lines.get(timeout=60))
        printed = "".join(output)
        assert f"nats://127.0.0.1:{nats_port}" in printed and f"http://127.0.0.1:{intake_port}" in printed
        assert f"http://127.0.0.1:{routing_port}" in printed and f"http://127.0.0.1:{supervision_port}" in printed
        assert f"http://127.0.0.1:{scoring_port}" in printed
        assert all((tmp_path / "var" / f"{s}.db").exists() for s in ("intake", "routing", "supervision", "scoring"))

        # The first tokens: `up` says where they are, in a file only the owner may read, as README's
        # quick start reads them: TOKEN=$(sed -n 's/^clerk: //p' var/secrets/first-tokens.txt)
        first = tmp_path / "var" / "secrets" / "first-tokens.txt"
        assert str(first) in printed and (first.stat().st_mode & 0o777) == 0o600
        assert not any(line.split(": ", 1)[1] in printed for line in first.read_text().splitlines())
        clerk = next(line.removeprefix("clerk: ") for line in first.read_text().splitlines() if line.startswith("clerk: "))
        auth = {"Authorization": f"Bearer {clerk}"}
        # Without a token nothing is open that reads or changes cases: 401, and no case.
        refused = httpx.post(f"http://127.0.0.1:{intake_port}/api/v1/cases", json=case_body())
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"

        # NATS refuses a client without a user (shared/natsauth.py); the tests read as admin.
        assert "Authorization Violation" in asyncio.run(anonymous(f"nats://127.0.0.1:{nats_port}"))
        admin = json.loads((tmp_path / "var" / "secrets" / "nats" / "admin.json").read_text())
        admin_url = f"nats://admin:{admin['password']}@127.0.0.1:{nats_port}"

        engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'intake.db'}")

        async def post_and_listen() -> tuple[dict, list]:
            """A JetStream subscriber, as a consumer of cases.received is; it counts what it gets."""
            nc = await nats.connect(admin_url)
            got: asyncio.Queue = asyncio.Queue()
            await nc.jetstream().subscribe("cases.received", cb=got.put, ordered_consumer=True)
            async with httpx.AsyncClient(headers=auth) as client:
                answer = await client.post(f"http://127.0.0.1:{intake_port}/api/v1/cases", json=case_body())
            assert answer.status_code == 201, answer.text
            received = [await asyncio.wait_for(got.get(), timeout=10)]
            await asyncio.to_thread(wait_until, lambda: outbox_pending(engine) == 0, 15.0, "the outbox to drain")
            await nc.flush()
            while not got.empty():
                received.append(got.get_nowait())
            await nc.close()
            return answer.json(), received

        accepted, received = asyncio.run(post_and_listen())
        engine.dispose()
        assert len(received) == 1 and received[0].headers["Nats-Msg-Id"]
        stored = read_subject(admin_url, "cases.received")
        assert [e.case_id for _, e in stored] == [accepted["case_number"]]  # exactly once in the stream

        # Routing is up too: the township's clerk, watching its cases, sees it arrive.
        watch = subprocess.Popen([sys.executable, "-m", "services.cli", "unit", "watch", "chengguan"],
                                 env={**env, "XF_NATS_URL": f"nats://127.0.0.1:{nats_port}"},
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        watched: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: watched.put(watch.stdout.readline()), daemon=True).start()
        try:
            line = watched.get(timeout=30)
        finally:
            watch.kill()
        assert accepted["case_number"] in line and "assigned (主办 lead)" in line and "邻居违规搭建" in line

        # `xinfang tail` reads the stream as ops.
        tail = subprocess.Popen([sys.executable, "-m", "services.cli", "tail", "cases.received", "--all"],
                                env={**env, "XF_NATS_URL": f"nats://127.0.0.1:{nats_port}"},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        tailed: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: tailed.put(tail.stdout.readline()), daemon=True).start()
        try:
            line = tailed.get(timeout=30)
        finally:
            tail.kill()
        assert line.startswith("cases.received ") and accepted["case_number"] in line

        # Supervision is up too: the case's timeline has its receipt and its assignment.
        timeline = f"http://127.0.0.1:{supervision_port}/api/v1/cases/{accepted['case_number']}/timeline"
        assert httpx.get(timeline).status_code == 401
        wait_until(lambda: [s["event"] for s in httpx.get(timeline, headers=auth).json()] == ["CaseReceived", "CaseAssigned"]
                   if httpx.get(timeline, headers=auth).status_code == 200 else False, what="the timeline")

        # Scoring is up too: this year's report counts the case.
        year = accepted["case_number"].split("-")[1]
        report = f"http://127.0.0.1:{scoring_port}/api/v1/reports/{year}"
        wait_until(lambda: httpx.get(report, headers=auth).json()["figures"]["received"] == 1,
                   what="scoring to count the case")
        run = subprocess.run([sys.executable, "-m", "services.cli", "report", "--period", year, "--format", "md"],
                             env={**env, "XF_TOKEN": clerk}, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "共受理信访事项1件" in run.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    while not lines.empty():
        output.append(lines.get())
    assert code == 0
    assert "xinfang stopped." in "".join(output)
    assert "NATS refused" not in "".join(output)  # each service had every permission it used


async def anonymous(url: str) -> str:
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    except Exception as exc:  # noqa: BLE001
        return repr(exc)
    await nc.close()
    return "connected"
