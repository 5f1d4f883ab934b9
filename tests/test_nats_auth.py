"""NATS users and permissions generated from the directory (shared/natsauth.py), against a real
nats-server running the generated ``auth.conf``: no anonymous connection; a unit publishes, reads,
requests and uses JetStream only as itself; the services, ops, the department clients (Python and
JavaScript) and the scoring rebuild work with their own users; TLS with a CA made in the test."""
from __future__ import annotations

import asyncio
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from fastapi.testclient import TestClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from services.runtime import NatsServer
from services.units.client import UnitClient
from shared import events as ev
from shared import natsauth
from shared.bus import Bus, declare_streams
from shared.settings import REPO_ROOT, Settings
from tests.helpers import case_body, free_port, wait_until
from tests.test_department_js import JS_DIR, node  # noqa: F401 - the session fixture that installs nats.js

# NATS users and permissions: the same whatever database the services use: SQLite only (tests/conftest.py).
pytestmark = pytest.mark.one_database

DENIED = (NatsTimeout, NoRespondersError, asyncio.TimeoutError)  # the server drops it and tells the client


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The users of the sample directory, generated once for the module (bcrypt is slow on purpose)."""
    data = tmp_path_factory.mktemp("natsauth") / "var"
    natsauth.ensure(Settings(data_dir=data))
    return data / "secrets" / "nats"


@pytest.fixture
def nats_server(tmp_path: Path, generated: Path) -> Iterator[NatsServer]:
    """This module's server runs the generated authorization (the suite's other tests: anonymous)."""
    server = NatsServer(tmp_path / "nats", free_port(), auth_conf=generated / natsauth.AUTH_CONF)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, generated: Path) -> Settings:
    """The suite's settings, with the users' files where the embedded run keeps them (so each service
    connects as svc_<service>), and the streams declared as admin, as `xinfang up` does."""
    shutil.copytree(generated, natsauth.creds_dir(settings), dirs_exist_ok=True)
    asyncio.run(declare_streams(settings))
    return settings


def creds(settings: Settings, user: str) -> Path:
    return natsauth.creds_path(settings, user)


async def connect_as(settings: Settings, user: str, errors: list[str] | None = None) -> nats.aio.client.Client:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))
    return await nats.connect(settings.nats_url, error_cb=on_error, allow_reconnect=False,
                              **natsauth.connect_options(settings, user))


def lower(subjects: set[str] | list[str] | dict) -> set[str]:
    return {s.lower() for s in subjects}


def violations(errors: list[str], kind: str) -> set[str]:
    """The subjects the server refused, from its ``Permissions Violation for <kind> to "<subject>"``
    (nats-py hands the error over in lower case)."""
    out = set()
    for e in errors:
        if f"permissions violation for {kind.lower()} to" in e.lower():
            out.add((e.split('"')[1] if '"' in e else e).lower())
    return out


def submit(intake: TestClient, n: int = 1, **fields) -> str:
    answer = intake.post("/api/v1/cases", json=case_body(n=n, **fields))
    assert answer.status_code == 201, answer.text
    return answer.json()["case_number"]


# --- the generated files --------------------------------------------------------------------------

def test_users_are_generated_from_the_directory_hashed_private_and_kept(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natsauth, "BCRYPT_COST", 4)  # the test's own folder: speed over strength
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "deploy" / "config", config)
    settings = Settings(data_dir=tmp_path / "var", config_dir=config)
    lines = natsauth.ensure(settings)
    folder = natsauth.creds_dir(settings)
    assert lines and str(folder) in lines[0]
    from shared.directory import load_directory
    units = list(load_directory(config).units)
    expected = {"admin", "ops", "svc_intake", "svc_routing", "svc_supervision", "svc_scoring",
                *(f"unit_{u}" for u in units)}
    files = {p.stem for p in folder.glob("*.json")} - {"hashes"}
    assert files == expected
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    forestry = json.loads((folder / "unit_forestry.json").read_text())
    assert forestry["user"] == "unit_forestry" and forestry["inbox_prefix"] == "_INBOX_forestry"
    assert len(forestry["password"]) >= 40
    conf = (folder / "auth.conf").read_text()
    passwords = {p.stem: json.loads(p.read_text())["password"] for p in folder.glob("*.json") if p.stem != "hashes"}
    assert not any(pw in conf for pw in passwords.values())  # hashes only
    assert conf.count('"password": "$2a$') == len(expected) and "no_auth_user" not in conf

    # Again: nothing changes. A unit added to the directory gets a user; the others keep their passwords.
    assert natsauth.ensure(settings) == []
    assert (folder / "auth.conf").read_text() == conf
    text = (config / "departments.yaml").read_text(encoding="utf-8")
    (config / "departments.yaml").write_text(text.replace("departments:\n", """departments:
- code: archives
  name: 县档案馆
  kind: department
  principal_leader:
    name: 李档
    title: 馆长
  leader_in_charge:
    name: 王案
    title: 副馆长
  superior: supervision_office
""", 1), encoding="utf-8")
    lines = natsauth.ensure(settings)
    assert lines == [f"NATS users created: unit_archives; credentials in {folder} (one JSON file each, mode 0600)"]
    again = {p.stem: json.loads(p.read_text())["password"] for p in folder.glob("*.json") if p.stem != "hashes"}
    assert {k: v for k, v in again.items() if k != "unit_archives"} == passwords
    assert '"user": "unit_archives"' in (folder / "auth.conf").read_text()
    archives = natsauth.unit_permissions("archives", "CASES")
    assert archives["publish"]["allow"] == sorted([
        "cases.acceptance.archives", "cases.extension_decided.archives",
        "cases.extension_requested.archives", "cases.progress.archives", "cases.replied.archives",
        "cases.returned.archives", "cases.signed.archives", "routing.assignment.archives", "timeline.archives",
        "$JS.API.STREAM.INFO.CASES", "$JS.API.CONSUMER.INFO.CASES.unit_archives",
        "$JS.API.CONSUMER.CREATE.CASES.unit_archives.cases.*.archives",
        "$JS.API.CONSUMER.MSG.NEXT.CASES.unit_archives", "$JS.ACK.CASES.unit_archives.>",
        "$JS.ACK.*.*.CASES.unit_archives.>"])
    assert archives["subscribe"]["allow"] == ["_INBOX_archives.>", "cases.*.archives"]


def test_nats_config_writes_the_same_for_an_external_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    monkeypatch.setattr(natsauth, "BCRYPT_COST", 4)
    monkeypatch.setenv("XF_DATA_DIR", str(tmp_path / "var"))
    out, ca = tmp_path / "external", tmp_path / "ca.pem"
    assert main(["nats-config", "--out", str(out), "--tls-ca", str(ca)]) == 0
    printed = capsys.readouterr().out
    assert 'include "auth.conf"' in printed and "svc_intake.json" in printed
    assert (out / "auth.conf").exists() and not (tmp_path / "var" / "secrets" / "nats").exists()
    assert json.loads((out / "unit_forestry.json").read_text())["tls_ca"] == str(ca)


# --- against the server ---------------------------------------------------------------------------

def test_a_connection_without_a_user_or_with_a_wrong_password_is_refused(settings: Settings) -> None:
    async def attempt(**kw) -> str:  # noqa: ANN003
        try:
            nc = await nats.connect(settings.nats_url, allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=2, **kw)
        except Exception as exc:  # noqa: BLE001
            return repr(exc)
        await nc.close()
        return "connected"

    assert "Authorization Violation" in asyncio.run(attempt())
    assert "Authorization Violation" in asyncio.run(attempt(user="unit_forestry", password="guess"))
    assert asyncio.run(attempt(**natsauth.file_options(creds(settings, "unit_forestry")))) == "connected"


def test_a_unit_publishes_only_its_own_department_events(settings: Settings) -> None:
    async def go() -> tuple[list[str], dict[str, str], dict, int]:
        errors: list[str] = []
        unit = await connect_as(settings, "unit_forestry", errors)
        js = unit.jetstream()
        outcome = {}
        for subject in ("cases.signed.chengguan", "cases.received", "cases.assigned.forestry", "cases.closed",
                        "cases.refused.forestry", "deadletter.routing"):
            try:
                await js.publish(subject, b"{}", headers={"Nats-Msg-Id": subject}, timeout=0.5)
                outcome[subject] = "stored"
            except DENIED:
                outcome[subject] = "no PubAck"
        own = await js.publish("cases.signed.forestry", b"{}", headers={"Nats-Msg-Id": "own"}, timeout=5)
        await unit.close()
        admin = await connect_as(settings, "admin")
        info = await admin.jetstream().stream_info("CASES", subjects_filter=">")
        dead = await admin.jetstream().stream_info("DEADLETTER")
        await admin.close()
        assert own.seq == 1
        return errors, outcome, (info.state.subjects or {}), dead.state.messages

    errors, outcome, stored, dead_letters = asyncio.run(go())
    assert set(outcome.values()) == {"no PubAck"}, outcome
    assert violations(errors, "Publish") == lower(outcome)
    assert stored == {"cases.signed.forestry": 1} and dead_letters == 0  # nothing else reached a stream


def test_a_unit_subscribes_only_to_its_own_cases_and_inbox(settings: Settings) -> None:
    async def go() -> tuple[list[str], list[str]]:
        errors: list[str] = []
        unit = await connect_as(settings, "unit_forestry", errors)
        got: list[str] = []

        async def heard(msg) -> None:  # noqa: ANN001
            got.append(msg.subject)
        for subject in ("cases.>", "cases.*.chengguan", "_INBOX.>", "_INBOX_chengguan.>", ">"):
            await unit.subscribe(subject, cb=heard)
        await unit.subscribe("cases.*.forestry", cb=heard)
        await unit.flush()
        admin = await connect_as(settings, "admin")
        for subject in ("cases.progress.chengguan", "_INBOX.abc", "_INBOX_chengguan.abc", "cases.progress.forestry"):
            await admin.publish(subject, b"x")
        await admin.flush()
        await asyncio.sleep(0.3)
        await admin.close()
        await unit.close()
        return errors, got

    errors, got = asyncio.run(go())
    assert violations(errors, "Subscription") == lower({"cases.>", "cases.*.chengguan", "_INBOX.>",
                                                        "_INBOX_chengguan.>", ">"})
    assert got == ["cases.progress.forestry"]


def test_a_unit_uses_no_jetstream_api_but_its_own_consumer(settings: Settings) -> None:
    """Deleting, updating or purging the stream, widening its own consumer's filter, creating or
    reading another's consumer, pulling from it or acking its messages: each refused, nothing changed."""
    async def go() -> None:
        admin = await connect_as(settings, "admin")
        ajs = admin.jetstream()
        # chengguan's consumer holds one message, delivered and not yet acknowledged.
        await ajs.publish("cases.assigned.chengguan", b"{}", headers={"Nats-Msg-Id": "a1"})
        other = await connect_as(settings, "unit_chengguan")
        ojs = other.jetstream()
        await ojs.add_consumer("CASES", ConsumerConfig(name="unit_chengguan", durable_name="unit_chengguan",
                                                       filter_subject="cases.*.chengguan",
                                                       ack_policy=AckPolicy.EXPLICIT, ack_wait=60))
        [held] = await (await ojs.pull_subscribe_bind("unit_chengguan", "CASES")).fetch(1, timeout=5)
        before = await ajs.stream_info("CASES")

        errors: list[str] = []
        unit = await connect_as(settings, "unit_forestry", errors)
        js = unit.jetstream()
        await js.add_consumer("CASES", ConsumerConfig(name="unit_forestry", durable_name="unit_forestry",
                                                      filter_subject="cases.*.forestry", ack_policy=AckPolicy.EXPLICIT))
        refused = {
            "$JS.API.STREAM.DELETE.CASES": {},
            "$JS.API.STREAM.UPDATE.CASES": {"name": "CASES", "subjects": ["cases.>"], "max_age": 1},
            "$JS.API.STREAM.PURGE.CASES": {},
            "$JS.API.STREAM.CREATE.MINE": {"name": "MINE", "subjects": ["cases.>"]},
            "$JS.API.INFO": {},
            "$JS.API.STREAM.INFO.DEADLETTER": {},
            # its own consumer with another filter: through the pinned subject's siblings
            "$JS.API.CONSUMER.CREATE.CASES.unit_forestry.cases.>": {"stream_name": "CASES", "config": {
                "name": "unit_forestry", "durable_name": "unit_forestry", "filter_subject": "cases.>"}},
            "$JS.API.CONSUMER.CREATE.CASES.unit_forestry": {"stream_name": "CASES", "config": {
                "name": "unit_forestry", "durable_name": "unit_forestry", "filter_subjects": ["cases.>"]}},
            "$JS.API.CONSUMER.DURABLE.CREATE.CASES.unit_forestry": {"stream_name": "CASES", "config": {
                "durable_name": "unit_forestry", "filter_subject": "cases.>"}},
            "$JS.API.CONSUMER.CREATE.CASES": {"stream_name": "CASES", "config": {
                "name": "unit_forestry", "filter_subject": "cases.>"}},
            # another name, or another's consumer
            "$JS.API.CONSUMER.CREATE.CASES.snoop.cases.*.forestry": {"stream_name": "CASES", "config": {
                "name": "snoop", "filter_subject": "cases.*.forestry"}},
            "$JS.API.CONSUMER.CREATE.CASES.unit_chengguan.cases.*.chengguan": {"stream_name": "CASES", "config": {
                "name": "unit_chengguan", "durable_name": "unit_chengguan", "filter_subject": "cases.*.chengguan"}},
            "$JS.API.CONSUMER.INFO.CASES.unit_chengguan": {},
            "$JS.API.CONSUMER.INFO.CASES.routing": {},
            "$JS.API.CONSUMER.MSG.NEXT.CASES.unit_chengguan": {"batch": 1, "expires": 200_000_000},
            "$JS.API.CONSUMER.MSG.NEXT.CASES.routing": {"batch": 1, "expires": 200_000_000},
            "$JS.API.CONSUMER.DELETE.CASES.unit_chengguan": {},
            "$JS.API.CONSUMER.DELETE.CASES.unit_forestry": {},
            "$JS.API.CONSUMER.NAMES.CASES": {},
            "$JS.API.STREAM.MSG.GET.CASES": {"seq": 1},
        }
        unanswered = []
        for subject, body in refused.items():
            try:
                await unit.request(subject, json.dumps(body).encode(), timeout=0.5)
            except DENIED:
                unanswered.append(subject)
        # The pinned subject itself, with another filter in the body: the server refuses the mismatch.
        answer = json.loads((await unit.request(
            "$JS.API.CONSUMER.CREATE.CASES.unit_forestry.cases.*.forestry", json.dumps({
                "stream_name": "CASES", "config": {"name": "unit_forestry", "durable_name": "unit_forestry",
                                                   "filter_subject": "cases.>"}}).encode(), timeout=5)).data)
        await unit.publish(held.reply, b"+ACK")  # another unit's message, acked by forging its ack subject
        await unit.flush()
        await asyncio.sleep(0.3)
        await unit.close()

        assert sorted(unanswered) == sorted(refused), set(refused) - set(unanswered)
        assert violations(errors, "Publish") == lower({*refused, held.reply})
        assert "error" in answer and "filter" in answer["error"]["description"], answer
        after = await ajs.stream_info("CASES")
        assert (after.config.subjects, after.config.max_age, after.state.messages) == (
            before.config.subjects, before.config.max_age, before.state.messages)
        assert sorted(s.config.name for s in await ajs.streams_info()) == ["CASES", "DEADLETTER"]
        mine = await ajs.consumer_info("CASES", "unit_forestry")
        assert (mine.config.filter_subject, mine.config.filter_subjects, mine.config.durable_name) == (
            "cases.*.forestry", None, "unit_forestry")
        theirs = await ajs.consumer_info("CASES", "unit_chengguan")
        assert theirs.num_ack_pending == 1 and theirs.config.filter_subject == "cases.*.chengguan"
        names = sorted([c.name for c in await ajs.consumers_info("CASES")])
        assert names == ["unit_chengguan", "unit_forestry"]
        await other.close()
        await admin.close()

    asyncio.run(go())


def test_ops_reads_the_stream_and_changes_nothing(settings: Settings, capsys: pytest.CaptureFixture) -> None:
    from services.cli import tail_events

    async def go() -> tuple[list[str], list[str]]:
        admin = await connect_as(settings, "admin")
        for n in range(3):
            await admin.jetstream().publish("cases.received", json.dumps({"n": n}).encode(),
                                            headers={"Nats-Msg-Id": f"r{n}"})
        errors: list[str] = []
        ops = await connect_as(settings, "ops", errors)
        js = ops.jetstream()
        assert (await js.stream_info("CASES")).state.messages == 3
        unanswered = []
        for subject, body in {"$JS.API.STREAM.DELETE.CASES": {}, "$JS.API.STREAM.PURGE.CASES": {},
                              "$JS.API.CONSUMER.CREATE.CASES": {"stream_name": "CASES", "config": {
                                  "name": "unit_forestry", "filter_subject": "cases.>"}},
                              "$JS.API.CONSUMER.CREATE.CASES.x.cases.>": {"stream_name": "CASES", "config": {
                                  "name": "x", "filter_subject": "cases.>"}},
                              "$JS.API.CONSUMER.MSG.NEXT.CASES.routing": {"batch": 1}}.items():
            try:
                await ops.request(subject, json.dumps(body).encode(), timeout=0.5)
            except DENIED:
                unanswered.append(subject)
        try:
            await js.publish("cases.received", b"{}", timeout=0.5)
            unanswered.append("stored!")
        except DENIED:
            unanswered.append("cases.received")
        await ops.close()
        # `xinfang tail --all` as ops: every stored event, in order, then new ones.
        task = asyncio.create_task(tail_events(settings.nats_url, "CASES", "cases.received", True,
                                               natsauth.connect_options(settings, "ops")))

        async def printed_lines(n: int) -> None:  # what the tail printed, awaited (not a fixed sleep)
            deadline = asyncio.get_running_loop().time() + 30
            while len(printed) < n and asyncio.get_running_loop().time() < deadline:
                printed.extend(capsys.readouterr().out.splitlines())
                await asyncio.sleep(0.05)
        await printed_lines(3)
        await admin.jetstream().publish("cases.received", b'{"n": 3}', headers={"Nats-Msg-Id": "r3"})
        await printed_lines(4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await admin.close()
        return errors, unanswered

    printed: list[str] = []
    errors, unanswered = asyncio.run(go())
    assert len(unanswered) == 6 and "stored!" not in unanswered
    assert len(violations(errors, "Publish")) == 6
    printed.extend(capsys.readouterr().out.splitlines())
    assert printed == [f'cases.received {{"n": {n}}}' for n in range(4)]


def test_the_services_and_a_unit_work_end_to_end_with_their_own_users(
        settings: Settings, intake: TestClient, routing: TestClient, supervision: TestClient,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """intake → routing → the unit's own durable (created with its filter pinned, pulled, acked) → its
    sign-for after asking routing → supervision's timeline, asked by the unit; then scoring's rebuild
    as svc_scoring. No operation of any service was refused."""
    assert [c.app.state.bus.user for c in (intake, routing, supervision)] == [
        "svc_intake", "svc_routing", "svc_supervision"]
    number = submit(intake, category="logging_permit", title="申请采伐自家承包山林木")

    def timeline() -> list[dict]:
        answer = supervision.get(f"/api/v1/cases/{number}/timeline")
        return answer.json() if answer.status_code == 200 else []
    wait_until(lambda: [s["event"] for s in timeline()] == ["CaseReceived", "CaseAssigned"], what="the assignment")

    async def unit_side() -> tuple[list[ev.Event], ev.UnitSigned, ev.TimelineAnswer, object]:
        async with UnitClient(settings.nats_url, "forestry", stream=settings.stream_name,
                              creds=creds(settings, "unit_forestry")) as unit:
            assert unit.nc._inbox_prefix.decode() == "_INBOX_forestry"
            seen = [e async for e in unit.events(idle_timeout=2)]
            signed = await unit.sign(number)
            answer = await unit.timeline(number)
        admin = await connect_as(settings, "admin")
        info = await admin.jetstream().consumer_info(settings.stream_name, "unit_forestry")
        await admin.close()
        return seen, signed, answer, info

    seen, signed, answer, info = asyncio.run(unit_side())
    assert [(type(e), e.case_id) for e in seen] == [(ev.CaseAssigned, number)]
    assert answer.found and [s.event for s in answer.timeline][:2] == ["CaseReceived", "CaseAssigned"]
    # delivered once and acked (its own sign-for's echo waits behind it)
    assert (info.config.filter_subject, info.delivered.consumer_seq, info.ack_floor.consumer_seq,
            info.num_ack_pending) == ("cases.*.forestry", 1, 1, 0)
    wait_until(lambda: any(s["event_id"] == signed.event_id and s["status"] == "applied" for s in timeline()),
               what="the sign-for applied")
    # From a terminal, with the unit's file given.
    from services.cli import main
    monkeypatch.setenv("XF_NATS_URL", settings.nats_url)
    assert main(["unit", "sign", "forestry", number, "--creds", str(creds(settings, "unit_forestry"))]) == 0
    capsys.readouterr()

    from services.scoring.cli import rebuild
    assert rebuild(settings) == 0
    assert "applied" in capsys.readouterr().out
    refused = [r.getMessage() for r in caplog.records if "NATS refused" in r.getMessage()]
    assert refused == [], [(r.getMessage(), getattr(r, "fields", None)) for r in caplog.records]


def test_the_department_examples_work_with_the_units_credentials(
        settings: Settings, intake: TestClient, routing: TestClient, supervision: TestClient, node: str) -> None:  # noqa: F811
    ours = submit(intake, 1, category="logging_permit", title="申请采伐自家承包山林木")
    theirs = submit(intake, 2)  # 城关镇's
    wait_until(lambda: routing.get(f"/api/v1/routing/{theirs}").status_code == 200, what="routed")

    def holds(case: str, unit: str) -> bool:
        answer = supervision.get(f"/api/v1/cases/{case}/timeline")
        return answer.status_code == 200 and any(s["event"] == "CaseAssigned" and s["unit"] == unit
                                                 for s in answer.json())
    wait_until(lambda: holds(ours, "forestry") and holds(theirs, "chengguan"), what="both assigned")

    # nats.js: inboxPrefix from the file, consumers.add with the filter in the subject, no account info.
    run = subprocess.run([node, str(JS_DIR / "department.mjs"), settings.nats_url, "forestry", theirs, "60",
                          str(creds(settings, "unit_forestry"))], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert '"done":true' in run.stdout

    # plain nats-py, as a department's own system (chengguan's consumer is created by it).
    run = subprocess.run([sys.executable, str(REPO_ROOT / "deploy" / "examples" / "department.py"), settings.nats_url,
                          "chengguan", "2", "--creds", str(creds(settings, "unit_chengguan"))],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"signed {theirs}" in run.stdout


def test_tls_with_a_certificate_made_in_the_test(tmp_path: Path, generated: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    server = NatsServer(tmp_path / "nats", free_port(), auth_conf=generated / natsauth.AUTH_CONF,
                        tls_cert=cert_file, tls_key=key_file)
    server.start()
    try:
        settings = Settings(data_dir=tmp_path / "var", nats_url=server.url, nats_tls_ca=ca_file, log_level="WARNING")
        shutil.copytree(generated, natsauth.creds_dir(settings))
        asyncio.run(declare_streams(settings))  # admin, over TLS

        async def go() -> dict[str, str]:
            out = {}
            bus = Bus(settings, "intake")  # a service's connection: svc_intake over TLS
            bus.start()
            await bus.wait_connected(15)
            out["service"] = str(bus.user)
            await bus.publish("cases.received", b"{}", msg_id="t1")
            await bus.close()
            # A unit with tls_ca in its file (what `xinfang nats-config --tls-ca` writes).
            path = tmp_path / "unit_forestry.json"
            path.write_text(json.dumps({**json.loads(creds(settings, "unit_forestry").read_text()),
                                        "tls_ca": str(ca_file)}))
            async with UnitClient(server.url, "forestry", creds=path) as unit:
                out["unit"] = str((await unit.js.stream_info("CASES")).state.messages)
            for name, kw in {"without TLS": natsauth.file_options(creds(settings, "unit_forestry")),
                             "untrusted": {**natsauth.file_options(creds(settings, "unit_forestry")),
                                           "tls": natsauth.tls_context(None)}}.items():
                try:
                    nc = await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0,
                                            connect_timeout=2, **kw)
                    await nc.close()
                    out[name] = "connected"
                except Exception as exc:  # noqa: BLE001
                    out[name] = repr(exc)
            return out

        out = asyncio.run(go())
        assert out["service"] == "svc_intake" and out["unit"] == "1"
        assert out["without TLS"] != "connected" and out["untrusted"] != "connected", out
        assert "tls {" in (tmp_path / "nats" / "nats.conf").read_text()
    finally:
        server.stop()


def test_a_service_finds_the_streams_admin_declared_and_tolerates_what_it_may_not_change(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[bool, str]:
        admin = await connect_as(settings, "admin")
        ajs = admin.jetstream()
        cfg = (await ajs.stream_info("CASES")).config
        await ajs.update_stream(StreamConfig(**{**cfg.as_dict(), "duplicate_window": 60.0}))  # drifted
        bus = Bus(settings, "routing")
        bus.start()
        await bus.wait_connected(30)  # its update attempt is refused; it warns and goes on
        connected = bus.connected
        await bus.close()
        window = (await ajs.stream_info("CASES")).config.duplicate_window
        await ajs.delete_stream("DEADLETTER")
        with pytest.raises(RuntimeError, match="may not create it"):
            from shared.bus import ensure_streams
            nc = await nats.connect(settings.nats_url, **natsauth.connect_options(settings, "svc_routing"))
            try:
                await ensure_streams(nc.jetstream(timeout=1), settings)
            finally:
                await nc.close()
        await admin.close()
        return connected, window

    connected, window = asyncio.run(go())
    assert connected and window == 60.0
    assert any("may not update the stream" in r.getMessage() for r in caplog.records)


def test_the_production_config_takes_the_generated_users(tmp_path: Path, generated: Path) -> None:
    """deploy/nats/nats.conf with auth.conf beside it, as `xinfang nats-config` and its README say."""
    from services.runtime import nats_server_binary

    shutil.copy(REPO_ROOT / "deploy" / "nats" / "nats.conf", tmp_path / "nats.conf")
    shutil.copy(generated / natsauth.AUTH_CONF, tmp_path / natsauth.AUTH_CONF)
    run = subprocess.run([nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0 and "is valid" in run.stdout + run.stderr, run.stdout + run.stderr
    conf = (tmp_path / "nats.conf").read_text()
    assert 'include "auth.conf"' in conf and "sync_interval: always" in conf and "# tls {" in conf


def test_up_gives_each_service_its_own_file_never_its_own(tmp_path: Path) -> None:
    from services.runtime import service_env

    folder = tmp_path / "external"
    folder.mkdir()
    (folder / "admin.json").write_text("{}")
    (folder / "svc_routing.json").write_text("{}")
    settings = Settings(data_dir=tmp_path / "var", nats_creds=folder / "admin.json")
    env = {"XF_NATS_CREDS": str(folder / "admin.json"), "OTHER": "1"}
    assert service_env(env, settings, "routing") == {"XF_NATS_CREDS": str(folder / "svc_routing.json"), "OTHER": "1"}
    assert service_env(env, settings, "intake") == {"OTHER": "1"}  # none for it: not admin's either


def test_a_case_accusing_a_unit_never_reaches_it_over_nats(
        settings: Settings, intake: TestClient, routing: TestClient, supervision: TestClient) -> None:
    """检举 forestry: the case goes to its superior; forestry's own consumer, its timeline request and
    any subscription it may make see nothing of it, while its ordinary case arrives."""
    accusing = submit(intake, n=1, category="logging_permit", accused_units=["forestry"],
                      content="林业站工作人员违规发放采伐证。")
    ordinary = submit(intake, n=2, category="logging_permit", title="申请采伐自家承包山林木")

    def assigned_to(case_id: str) -> list[str]:
        answer = supervision.get(f"/api/v1/cases/{case_id}/timeline")
        steps = answer.json() if answer.status_code == 200 else []
        return [s["unit"] for s in steps if s["event"] == "CaseAssigned"]
    wait_until(lambda: assigned_to(accusing) and assigned_to(ordinary), what="both cases assigned")
    assert "forestry" not in assigned_to(accusing) and assigned_to(ordinary) == ["forestry"]

    async def as_forestry() -> tuple[list[ev.Event], ev.TimelineAnswer]:
        async with UnitClient(settings.nats_url, "forestry", stream=settings.stream_name,
                              creds=creds(settings, "unit_forestry")) as unit:
            seen = [e async for e in unit.events(idle_timeout=2)]
            return seen, await unit.timeline(accusing)
    seen, answer = asyncio.run(as_forestry())
    assert {getattr(e, "case_id", None) for e in seen} == {ordinary}
    assert (answer.found, answer.error, answer.timeline) == (False, "not_found", [])
