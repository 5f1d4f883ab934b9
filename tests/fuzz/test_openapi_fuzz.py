"""schemathesis against every service's OpenAPI schema, each service a real process on a real
nats-server and database (SQLite, and PostgreSQL when XF_TEST_POSTGRES_URL is set): no input the
schema allows or refuses gets a 5xx, and every answer matches the schema (the documented error body
for every 4xx). Bounded: ``XF_FUZZ_EXAMPLES`` examples per operation (default 25). `make fuzz`."""
from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from shared.settings import Settings
from tests.helpers import free_port, start_service, stop_process

SERVICES = ("intake", "routing", "supervision", "scoring")
EXAMPLES = int(os.environ.get("XF_FUZZ_EXAMPLES", "25"))


@pytest.mark.parametrize("service", SERVICES)
def test_no_input_gets_a_server_error_and_every_answer_matches_the_schema(
        service: str, settings: Settings, auth: dict[str, str], tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    env = {"XF_DATA_DIR": str(settings.data_dir), "XF_NATS_URL": settings.nats_url, "XF_LOG_LEVEL": "WARNING",
           "XF_MODE": "test", **{f"XF_{s.upper()}_DB_URL": settings.db_url(s) for s in SERVICES}}
    process = start_service(service, port, env, tmp_path)
    failures: list[str] = []
    calls: Counter[str] = Counter()
    try:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json", headers=auth)
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                                 database=None)
            def fuzz(case) -> None:  # noqa: ANN001
                calls[case.operation.label] += 1
                case.call_and_validate(headers=auth, checks=[not_a_server_error, response_schema_conformance],
                                       timeout=30)
            try:
                fuzz()
            except Exception as exc:  # noqa: BLE001 - every operation is tried; all failures are reported
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
    finally:
        stop_process(process)
    print(f"{service}: {sum(calls.values())} calls over {len(calls)} operations")
    assert len(calls) >= 5 and not failures, "\n\n".join(failures)
