"""Intake scales out: replicas share one database and one NATS, and numbers stay unique and gap-free."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from services.runtime import NatsServer
from shared import tokens
from shared.db import make_engine
from shared.settings import Settings
from tests.helpers import case_body, free_port, outbox_pending, read_subject, start_service, stop_process, wait_until


def test_three_replicas_under_500_concurrent_submissions_give_500_gap_free_numbers_and_500_events(
        tmp_path: Path, nats_server: NatsServer, db_url: str) -> None:
    env = {"XF_NATS_URL": nats_server.url, "XF_INTAKE_DB_URL": db_url, "XF_DATA_DIR": str(tmp_path / "var"),
           "XF_LOG_LEVEL": "WARNING"}
    ports = [free_port() for _ in range(3)]
    # A clerk's token in the store every replica reads (<XF_DATA_DIR>/secrets/tokens.json).
    _, clerk = tokens.create(Settings(data_dir=tmp_path / "var"), "clerk", staff_id="desk1")
    replicas = [start_service("intake", port, env, tmp_path) for port in ports]
    try:
        async def submit_all() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
            async with httpx.AsyncClient(timeout=120, limits=limits, headers={"Authorization": f"Bearer {clerk}"}) as client:
                return await asyncio.gather(*(
                    client.post(f"http://127.0.0.1:{ports[i % 3]}/api/v1/cases",
                                json=case_body(n=i, title=f"第{i}号矛盾纠纷"))
                    for i in range(500)))

        answers = asyncio.run(submit_all())
        assert [a.status_code for a in answers] == [201] * 500
        numbers = [a.json()["case_number"] for a in answers]
        assert len(set(numbers)) == 500
        assert sorted(int(n.rsplit("-", 1)[1]) for n in numbers) == list(range(1, 501))

        engine = make_engine(db_url)
        wait_until(lambda: outbox_pending(engine) == 0, timeout=60, what="every replica's outbox to drain")
        engine.dispose()
        events = [e for _, e in read_subject(nats_server.url, "cases.received")]
        assert len(events) == 500
        assert {e.case_id for e in events} == set(numbers)
    finally:
        codes = [stop_process(p) for p in replicas]
    assert codes == [0, 0, 0]  # each drained and stopped cleanly on SIGTERM
