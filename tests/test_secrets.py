"""Issue 10, "Secrets and privacy": no key has a default in the code; the keys come from the
environment or the data folder's keys file, and rotate without losing old cases; query codes are
stored only as keyed hashes (sealed in idempotent answers) and the migration converts old ones."""
from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, inspect, select, text

from shared import keys
from shared.db import SERVICES_DIR, make_engine, migrate
from shared.privacy import keyed_hash
from shared.settings import REPO_ROOT, Settings
from tests.conftest import running
from tests.helpers import case_body, read_subject, wait_until

started = contextmanager(running)  # a started app's client, for a ``with``

NO_KEYS = {"id_hash_key": None, "query_code_key": None}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XF_ID_HASH_KEY", "XF_QUERY_CODE_KEY", "XF_DATA_DIR", "XF_NATS_URL"):
        monkeypatch.delenv(name, raising=False)


def file_settings(settings: Settings) -> Settings:
    """The test's settings with the keys taken from ``<data_dir>/secrets/keys.json`` instead."""
    return settings.model_copy(update=NO_KEYS)


# --- no default ----------------------------------------------------------------------------------

def test_no_key_has_a_default_in_the_code(clean_env: None) -> None:
    s = Settings()
    assert s.id_hash_key is None and s.query_code_key is None
    sources = [p for d in ("shared", "services") for p in (REPO_ROOT / d).rglob("*.py")]
    assert not [p for p in sources if "xinfang-dev-key" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("where", ["external NATS", "PostgreSQL", "embedded"])
def test_a_service_without_keys_refuses_to_start_saying_how_to_set_them(tmp_path: Path, clean_env: None,
                                                                        where: str) -> None:
    update = {"data_dir": tmp_path, **NO_KEYS,
              "nats_url": "nats://127.0.0.1:9" if where == "external NATS" else None,
              "intake_db_url": "postgresql://db/intake" if where == "PostgreSQL" else None}
    settings = Settings().model_copy(update=update)
    with pytest.raises(keys.KeysError) as info:
        keys.load(settings)
    message = str(info.value)
    assert "XF_ID_HASH_KEY" in message and "XF_QUERY_CODE_KEY" in message and "xinfang keys init" in message
    assert "no default key" in message
    from services.runtime import keys_problem
    assert keys_problem(settings, ["intake"]).startswith("intake cannot start: no resident-ID hash key and no")
    assert keys_problem(settings, ["routing", "scoring"]) is None  # they hash nothing, so hold no key


def test_xinfang_run_intake_refuses_without_keys(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    monkeypatch.setenv("XF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XF_NATS_URL", "nats://127.0.0.1:9")
    assert main(["run", "intake"]) == 2
    err = capsys.readouterr().err
    assert "intake cannot start" in err and "XF_ID_HASH_KEY" in err and "xinfang keys init" in err
    assert main(["run", "supervision"]) == 2


def test_the_app_refuses_to_start_without_keys_and_starts_from_the_keys_file(settings: Settings) -> None:
    from services.intake.app import create_app

    with pytest.raises(keys.KeysError):
        with TestClient(create_app(file_settings(settings))):
            pass
    keys.ensure(file_settings(settings))
    with TestClient(create_app(file_settings(settings))) as client:
        assert client.get("/healthz").status_code == 200


# --- the keys file ----------------------------------------------------------------------------------

def test_ensure_generates_a_private_file_once_and_keeps_it(tmp_path: Path, clean_env: None) -> None:
    s = Settings(data_dir=tmp_path / "var")
    lines = keys.ensure(s)
    path = keys.keys_file(s)
    assert len(lines) == 1 and str(path) in lines[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    id_secret, qc_secret = data["id_hash"]["keys"][0]["secret"], data["query_code"]["keys"][0]["secret"]
    assert len(id_secret) == 64 and len(qc_secret) == 64 and id_secret != qc_secret
    int(id_secret, 16)  # 32 random bytes, hex
    assert keys.ensure(s) == [] and json.loads(path.read_text()) == data  # the second start changes nothing
    loaded = keys.load(s)
    assert loaded.id_hash.ids == ["k1"] and loaded.query_code.ids == ["k1"]
    assert id_secret not in repr(loaded) and qc_secret not in repr(loaded)


def test_a_keys_file_others_may_read_is_refused(tmp_path: Path, clean_env: None) -> None:
    s = Settings(data_dir=tmp_path)
    keys.ensure(s)
    os.chmod(keys.keys_file(s), 0o644)
    with pytest.raises(keys.KeysError, match="chmod 600"):
        keys.load(s)


def test_the_environment_wins_and_may_hold_a_ring(tmp_path: Path, clean_env: None) -> None:
    new, old = "n" * 40, "short-old-key"
    s = Settings(data_dir=tmp_path, id_hash_key=f"k2:{new},k1:{old}", query_code_key="b" * 32)
    loaded = keys.load(s)
    assert loaded.id_hash.current == "k2" and loaded.id_hash.ids == ["k2", "k1"]  # an old key may be short
    assert loaded.id_hash.hash("x") == keyed_hash(new, "x")
    assert loaded.query_code.ids == ["env"] and loaded.query_code.hash("x") == keyed_hash("b" * 32, "x")
    with pytest.raises(keys.KeysError, match="shorter than 32"):
        keys.load(Settings(data_dir=tmp_path, id_hash_key="too-short", query_code_key="b" * 32))
    with pytest.raises(keys.KeysError, match="distinct"):
        keys.load(Settings(data_dir=tmp_path, id_hash_key=f"k1:{new},k1:{old}", query_code_key="b" * 32))


def test_a_ring_checks_under_every_kept_key_and_hashes_under_the_current_one() -> None:
    ring = keys.KeyRing("query_code", (("k2", "2" * 40), ("k1", "1" * 40)))
    assert ring.hash("ABCD2345") == keyed_hash("2" * 40, "ABCD2345")
    assert ring.matches("ABCD2345", keyed_hash("1" * 40, "ABCD2345"))  # made before the rotation
    assert ring.matches("ABCD2345", keyed_hash("2" * 40, "ABCD2345"))
    assert not ring.matches("ABCD2345", keyed_hash("3" * 40, "ABCD2345"))
    assert not ring.matches("ABCD2345", None)


def test_the_keys_commands(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    monkeypatch.setenv("XF_DATA_DIR", str(tmp_path))
    assert main(["keys", "show"]) == 2 and "xinfang keys init" in capsys.readouterr().err
    assert main(["keys", "init"]) == 0 and "generated" in capsys.readouterr().out
    assert main(["keys", "init"]) == 0 and "nothing changed" in capsys.readouterr().out
    secrets_before = keys_file_secrets(tmp_path)
    assert main(["keys", "rotate", "--kind", "id_hash"]) == 0
    out = capsys.readouterr().out
    assert "resident-ID hash key is now k2; kept k1" in out and "query-code" not in out
    assert main(["keys", "show"]) == 0
    shown = capsys.readouterr().out
    assert "current k2, kept k2, k1" in shown and "current k1, kept k1" in shown
    assert not any(secret in shown for secret in keys_file_secrets(tmp_path))
    assert secrets_before <= keys_file_secrets(tmp_path)  # the old keys are kept
    assert main(["keys", "init", "--print"]) == 0
    printed = capsys.readouterr().out.split()
    assert [line.split("=")[0] for line in printed] == ["XF_ID_HASH_KEY", "XF_QUERY_CODE_KEY"]
    monkeypatch.setenv("XF_ID_HASH_KEY", "e" * 40)
    assert main(["keys", "rotate"]) == 2 and "XF_ID_HASH_KEY" in capsys.readouterr().err


def keys_file_secrets(data_dir: Path) -> set[str]:
    data = json.loads((data_dir / "secrets" / "keys.json").read_text())
    return {k["secret"] for kind in ("id_hash", "query_code") for k in data[kind]["keys"]}


# --- rotation keeps old cases linked and reachable ------------------------------------------------------

@pytest.mark.usefixtures("resident_steps_allowed")  # supervision allows the step
def test_after_rotation_a_repeat_is_still_found_and_old_codes_still_open_their_cases(
        settings: Settings, auth: dict[str, str], routing: TestClient) -> None:
    from services.supervision.app import create_app as supervision_app

    s = file_settings(settings)
    keys.ensure(s)
    first_body = case_body(title="村道被占用无法通行")
    with TestClient(app_of("intake", s), headers=auth) as intake:
        first = intake.post("/api/v1/cases", json=first_body).json()
    keys.rotate(s, ["id_hash", "query_code"])
    with TestClient(app_of("intake", s), headers=auth) as intake:
        second = intake.post("/api/v1/cases", json={**first_body, "title": "村道被占用无法通行，再次反映"}).json()
        assert second["repeat_of"] == first["case_number"] and second["flags"]["repeat"]
        # the first case's code (hashed under k1) still opens it, at supervision and at intake
        with TestClient(supervision_app(s), headers=auth) as supervision:
            wait_until(lambda: supervision.get(f"/api/v1/cases/{first['case_number']}").status_code == 200,
                       what="supervision to have the first case")  # a resident's 404 would count toward the limit
            assert supervision.post("/api/v1/progress", json={
                "case_id": first["case_number"], "query_code": first["query_code"]}).status_code == 200
        # Supervision stopped: the step is answered by the fixture alone (a real supervision would
        # refuse feedback on a case not replied yet, and the two answered in a race).
        assert intake.post(f"/api/v1/cases/{first['case_number']}/feedback",
                           json={"query_code": first["query_code"], "satisfied": True}).status_code == 201
    engine = make_engine(s.db_url("intake"))
    with engine.connect() as conn:
        hashes = dict(conn.execute(text("SELECT number, resident_id_hash FROM cases")).all())
    engine.dispose()
    loaded = keys.load(s)
    idn = first_body["resident"]["id_number"]
    assert hashes[first["case_number"]] == keyed_hash(loaded.id_hash.secret("k1"), idn)
    assert hashes[second["case_number"]] == keyed_hash(loaded.id_hash.secret("k2"), idn)


def app_of(service: str, settings: Settings):  # noqa: ANN201
    from services.runtime import app_factory

    return app_factory(service)(settings)


# --- query codes stored hashed --------------------------------------------------------------------------

def all_text(engine: Engine) -> str:
    """Every value of every row of every table, as text."""
    md = MetaData()
    md.reflect(engine)
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for t in md.tables.values() for row in conn.execute(select(t)))


def test_the_query_code_is_stored_only_as_its_keyed_hash_and_handed_out_once(
        settings: Settings, intake: TestClient, intake_db: Engine) -> None:
    answer = intake.post("/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "desk-1"})
    assert answer.status_code == 201
    number, code = answer.json()["case_number"], answer.json()["query_code"]
    assert "query_code" not in {c["name"] for c in inspect(intake_db).get_columns("cases")}
    with intake_db.connect() as conn:
        stored = conn.execute(text("SELECT query_code_hash FROM cases WHERE number = :n"), {"n": number}).scalar()
    ring = keys.load(settings).query_code
    assert stored == ring.hash(code) and stored != keys.load(settings).id_hash.hash(code)
    assert code not in all_text(intake_db)  # nowhere in intake's database, not even the stored answer
    wait_until(lambda: read_subject(settings.nats_url, "cases.received"), what="the event")
    [(_, event)] = read_subject(settings.nats_url, "cases.received")
    assert event.query_code_hash == stored and code not in event.model_dump_json()
    assert intake.get(f"/api/v1/cases/{number}").status_code == 200
    assert code not in intake.get(f"/api/v1/cases/{number}").text


def test_an_idempotent_replay_gives_the_same_code_which_is_stored_sealed(
        settings: Settings, intake: TestClient, intake_db: Engine) -> None:
    body = case_body()
    first = intake.post("/api/v1/cases", json=body, headers={"Idempotency-Key": "desk-7"})
    again = intake.post("/api/v1/cases", json=body, headers={"Idempotency-Key": "desk-7"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    with intake_db.connect() as conn:
        response = conn.execute(text("SELECT response FROM idempotency_keys")).scalar()
    sealed = json.loads(response)["query_code"] if isinstance(response, str) else response["query_code"]
    assert sealed.startswith("sealed:v1:t1:")
    loaded = keys.load(settings)
    assert loaded.unseal(sealed, f"case:desk-7|{first.json()['case_number']}") == first.json()["query_code"]
    with pytest.raises(keys.KeysError):  # bound to its row: another key's row cannot take it
        loaded.unseal(sealed, f"case:desk-8|{first.json()['case_number']}")


def test_a_visit_replay_gives_every_code_again(intake: TestClient, intake_db: Engine) -> None:
    visit = {"cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-xinhua",
             "visited_on": "2026-01-05", "households_visited": 12,
             "problems": [{"resident": {"name": "张三"}, "title": "灌溉渠堵塞", "content": "村东灌溉渠堵塞"},
                          {"resident": {"name": "李四"}, "title": "路灯不亮", "content": "村口路灯坏了"}]}
    first = intake.post("/api/v1/visits", json=visit, headers={"Idempotency-Key": "nv-1"})
    assert first.status_code == 201, first.text
    again = intake.post("/api/v1/visits", json=visit, headers={"Idempotency-Key": "nv-1"})
    assert again.json() == first.json()
    codes = [c["query_code"] for c in first.json()["cases"]]
    assert len(codes) == 2 and not any(c in all_text(intake_db) for c in codes)


# --- the migration of existing codes --------------------------------------------------------------------

def migrate_to(url: str, revision: str, settings: Settings | None = None) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / "intake" / "migrations"))
    cfg.attributes["settings"] = settings
    engine = make_engine(url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
    engine.dispose()


LEGACY_CASE = {"number": "QS-2026-000001", "year": 2026, "seq": 1, "channel": "walk_in",
               "received_at": "2026-01-05 01:00:00", "title": "邻居违规搭建", "content": "占用通道", "township": "chengguan",
               "people_count": 1, "accused_units": "[]", "resident_name": "王建国", "collective": False,
               "escalated": False, "backlog": False, "special_period": False, "query_code": "ABCD2345",
               "actor_kind": "clerk"}


def legacy_database(url: str) -> None:
    """An intake database as the code before this issue left it: a plain query code, and in clear in
    the stored answer."""
    migrate_to(url, "0001")
    engine = make_engine(url)
    answer = {"case_number": "QS-2026-000001", "query_code": "ABCD2345", "received_at": "2026-01-05T01:00:00Z",
              "channel": "walk_in", "repeat_of": None,
              "flags": {"collective": False, "escalated": False, "backlog": False, "repeat": False,
                        "special_period": False}}
    with engine.begin() as conn:
        cols = ", ".join(LEGACY_CASE)
        conn.execute(text(f"INSERT INTO cases ({cols}) VALUES ({', '.join(':' + c for c in LEGACY_CASE)})"), LEGACY_CASE)
        conn.execute(text("INSERT INTO idempotency_keys (key, request_hash, response, created_at) "
                          "VALUES ('case:old-1', 'h', :r, '2026-01-05 01:00:00')"), {"r": json.dumps(answer)})
    engine.dispose()


def test_the_migration_hashes_existing_codes_and_seals_stored_answers(settings: Settings, database) -> None:  # noqa: ANN001
    url = database("intake")
    legacy_database(url)
    with pytest.raises(keys.KeysError):  # rows to convert and no keys: it says how to set them
        migrate("intake", url, file_settings(settings))
    migrate("intake", url, settings)
    engine = make_engine(url)
    assert "query_code" not in {c["name"] for c in inspect(engine).get_columns("cases")}
    assert "ABCD2345" not in all_text(engine)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT query_code_hash FROM cases")).scalar()
    engine.dispose()
    loaded = keys.load(settings)
    assert stored == loaded.query_code.hash("ABCD2345")
    migrate("intake", url)  # at head: nothing to do, no keys needed


@pytest.mark.usefixtures("resident_steps_allowed")  # supervision allows the step
def test_a_migrated_case_opens_with_its_old_code(settings: Settings, database, auth: dict[str, str]) -> None:  # noqa: ANN001
    legacy_database(database("intake"))
    with started("intake", settings, auth) as client:
        assert client.post("/api/v1/cases/QS-2026-000001/feedback",
                           json={"query_code": "abcd2345", "satisfied": True}).status_code == 201


def test_a_fresh_database_migrates_without_keys(tmp_path: Path, clean_env: None) -> None:
    url = f"sqlite:///{tmp_path}/intake.db"
    migrate("intake", url, Settings(data_dir=tmp_path))
    engine = make_engine(url)
    assert "resident_failures" in inspect(engine).get_table_names()
    engine.dispose()

