"""The bus's contract (AsyncAPI 3.0.0): the committed copy is current, the document is valid, every
subject and event is in it, and every field of every event says what it means.

``tests/schemas/asyncapi-3.0.0.json`` is the official AsyncAPI 3.0.0 JSON Schema, vendored unchanged
from the npm package ``@asyncapi/specs`` 6.11.1 (``npm pack @asyncapi/specs``), file
``schemas/3.0.0-without-$id.json``: one bundled file whose only non-local ``$ref``s sit inside
``examples``, so it validates offline.
"""
from __future__ import annotations

import difflib
import inspect
import json
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.routing.handlers import HANDLERS as ROUTING
from services.scoring.handlers import HANDLERS as SCORING
from services.supervision.handlers import HANDLERS as SUPERVISION
from shared import asyncapi, subjects
from shared import events as ev
from shared.settings import REPO_ROOT, Settings

COMMITTED = REPO_ROOT / "docs" / "asyncapi.yaml"
SPEC_SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"
REGENERATE = ".venv/bin/xinfang asyncapi --format yaml > docs/asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict:
    return asyncapi.document()


def resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def payload_of(doc: dict, channel: dict) -> dict:
    (message_ref,) = channel["messages"].values()
    return resolve(doc, resolve(doc, message_ref["$ref"])["payload"]["$ref"])


def test_the_committed_copy_is_current() -> None:
    fresh = asyncapi.render("yaml")
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    if fresh != committed:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                                 "docs/asyncapi.yaml", "generated", n=1))[:40])
        pytest.fail(f"docs/asyncapi.yaml is not what the code generates; regenerate it with\n    {REGENERATE}\n"
                    f"and commit it. The first differences:\n{diff}")


def test_the_document_is_valid_asyncapi_3(doc: dict) -> None:
    schema = json.loads(SPEC_SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "AsyncAPI 3.0.0 schema."
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10])
    assert doc["asyncapi"] == "3.0.0"


def test_every_reference_resolves(doc: dict) -> None:
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    assert refs
    for ref in refs:
        resolve(doc, ref)  # a KeyError names the dangling one


def test_every_subject_is_a_channel(doc: dict) -> None:
    names = [n for n, v in vars(subjects).items() if n.isupper() and isinstance(v, str) and "." in v]
    assert {"ASSIGNMENT_QUERY", "TIMELINE_QUERY", "DEAD_LETTER", "REFUSED", "NOTIFIED", "RECEIVED"} <= set(names)
    addresses = {c.get("address") for c in doc["channels"].values()}
    assert [n for n in names if getattr(subjects, n) not in addresses] == []
    assert subjects.for_unit("{unit}") in addresses  # what a unit subscribes to
    for channel in doc["channels"].values():  # each {placeholder} of an address is a declared parameter
        for name in ("unit", "service"):
            assert (f"{{{name}}}" in (channel.get("address") or "")) == (name in channel.get("parameters", {}))


@pytest.mark.parametrize("name", list(ev.EVENT_TYPES))
def test_every_event_has_its_payload_with_the_envelope_required(doc: dict, name: str) -> None:
    cls = ev.EVENT_TYPES[name]
    (channel,) = [c for c in doc["channels"].values() if c.get("address") == cls.subject_template]
    payload = payload_of(doc, channel)
    assert payload["properties"]["type"]["const"] == name
    assert {"type", "schema_version", "event_id", "occurred_at", "actor"} <= set(payload["required"])
    assert f"Published by {asyncapi._party(cls.published_by)}." in channel["description"]
    assert doc["operations"][name]["action"] == "send"


def test_consumers_come_from_the_handler_tables(doc: dict) -> None:
    tables = {"routing": ROUTING, "scoring": SCORING, "supervision": SUPERVISION}
    expected = {f"{s}Receives{cls.model_fields['type'].default}" for s, t in tables.items() for cls in t.handlers}
    received = {k for k, op in doc["operations"].items() if op["action"] == "receive" and "Receives" in k}
    assert received == expected
    assert "Consumed by routing, scoring, supervision." in doc["channels"]["CaseReceived"]["description"]


def test_the_department_side(doc: dict) -> None:
    inbox = payload_of(doc, doc["channels"]["DepartmentInbox"])
    delivered = {ref["$ref"].rsplit("/", 1)[1] for ref in inbox["oneOf"]}
    assert {"CaseAssigned", "EventRefused", "UnitNotified", "CaseReminded", "UnitSigned"} <= delivered
    assert "CaseReceived" not in delivered  # bureau-wide subjects do not reach a unit
    for cls in ev.DEPARTMENT_EVENTS:  # what a unit publishes, on its own subjects
        name = cls.model_fields["type"].default
        assert doc["channels"][name]["address"] == cls.subject_template
        assert doc["operations"][name]["summary"] == "Sent by the unit itself (department)."
    for query, answer, subject in (("AssignmentQuery", "AssignmentAnswer", subjects.ASSIGNMENT_QUERY),
                                   ("TimelineQuery", "TimelineAnswer", subjects.TIMELINE_QUERY)):
        operation = doc["operations"][query]
        assert resolve(doc, operation["channel"]["$ref"])["address"] == subject
        assert payload_of(doc, doc["channels"][query])["title"] == query
        reply = resolve(doc, operation["reply"]["channel"]["$ref"])
        assert reply["address"] is None  # the requester's own inbox
        assert payload_of(doc, reply)["title"] == answer


def test_every_field_of_every_model_has_a_description() -> None:
    models = [c for _, c in inspect.getmembers(ev, inspect.isclass)
              if issubclass(c, BaseModel) and c.__module__ == ev.__name__]
    assert ev.CaseBrief in models and ev.TimelineEntry in models
    missing = []
    for model in models:
        schema = model.model_json_schema()
        for title, sub in [(model.__name__, schema), *schema.get("$defs", {}).items()]:
            missing += [f"{title}.{field}" for field, prop in sub.get("properties", {}).items()
                        if not prop.get("description")]
    assert sorted(set(missing)) == [], "add Field(description=...) to these fields in shared/events.py"


def test_every_service_serves_it_without_a_token(tmp_path: Path) -> None:
    from services.intake.app import create_app
    settings = Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:9")  # and no API token at all
    client = TestClient(create_app(settings))  # no ``with``: the lifespan (database, NATS) never runs
    answer = client.get("/asyncapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == asyncapi.document()
    assert client.get("/asyncapi.json").json() == answer.json()  # served from the cache
    assert not (tmp_path / "intake.db").exists()
