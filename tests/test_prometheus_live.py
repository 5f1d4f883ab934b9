"""A real Prometheus (Debian's ``prometheus``) scraping a running stack: a nats-server with its users
and the four services as processes (tests/faults/system.py's System), on SQLite only: what is read
here does not depend on the database (tests/test_ops_metrics.py checks the series on PostgreSQL too),
and a second stack would cost `make test` a minute.

Prometheus runs deploy/prometheus/prometheus.yml with the stack's free ports for the services'
127.0.0.1:810x, every interval 1 s instead of 15 s, and the real rules/recording.yml and
rules/alerts.yml, except that every alert's ``for:`` is rewritten to 3 s in the temporary copy, so
an alert fires in seconds rather than minutes (its expression is the file's own). Everything is
read through Prometheus's HTTP API: the cases submitted over HTTP appear in the series, NATS reads
connected on every service with no /readyz call ever made, each service's /metrics passes
``promtool check metrics``, and alerts fire when their condition is made true: routing killed while
cases arrive (XfServiceDown), NATS killed (XfNatsDisconnected).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from shared import natsauth
from shared.settings import Settings
from tests.faults.system import SERVICES, System
from tests.helpers import case_body
from tests.prometheus_server import DEPLOY, Prometheus, promtool, wait_for

POSTGRES_URL = os.environ.get("XF_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
ALERT_FOR = "3s"  # every alert's `for:` in the test's copy of rules/alerts.yml
WAIT_S = 90  # generous: the machine is shared
pytestmark = pytest.mark.one_database


@dataclass
class Stack:
    system: System
    prometheus: Prometheus
    posted: int = 0

    def post_cases(self, n: int, channels: tuple[str, ...] = ("walk_in", "letter", "phone", "online")) -> None:
        """``n`` cases over intake's API, each answered 201."""
        for _ in range(n):
            self.posted += 1
            k = self.posted
            body = case_body(channels[k % len(channels)], n=500 + k, title=f"监控演练第{k}号：村道占用")
            answer = self.system.http.post(f"{self.system.url('intake')}/api/v1/cases", json=body,
                                           headers={"Idempotency-Key": f"prometheus-live-{k}"})
            assert answer.status_code == 201, answer.text

    def firing(self, alertname: str) -> list[dict]:
        return [a for a in self.prometheus.alerts() if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def prometheus_config(system: System, root: Path, port: int) -> dict:
    """deploy/prometheus/prometheus.yml pointed at this stack, 1 s intervals; the rules copied into
    ``root/rules`` with every alert's ``for:`` shortened to ALERT_FOR."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        target = system.ports.get(job["job_name"], port)  # a service's port, or Prometheus's own
        job["static_configs"] = [{"targets": [f"127.0.0.1:{target}"]}]
    assert {j["job_name"] for j in config["scrape_configs"]} >= set(SERVICES)
    (root / "rules").mkdir(parents=True, exist_ok=True)
    (root / "rules" / "recording.yml").write_text((DEPLOY / "rules" / "recording.yml").read_text())
    alerts = yaml.safe_load((DEPLOY / "rules" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = ALERT_FOR
    (root / "rules" / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False, allow_unicode=True))
    assert config["rule_files"] == ["rules/recording.yml", "rules/alerts.yml"]
    return config


@pytest.fixture(scope="module", params=DATABASES)
def database(request: pytest.FixtureRequest) -> str:
    """The stack's database, named as tests/conftest.py names it, so that ``one_database`` keeps
    the module on SQLite (tests/conftest.py drops the PostgreSQL variants)."""
    return request.param


@pytest.fixture(scope="module")
def stack(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"prometheus-live-{database}")
    users = Settings(data_dir=root / "nats-users")
    natsauth.ensure(users)
    system = System(root / "system", database, POSTGRES_URL, natsauth.creds_dir(users))
    prometheus: Prometheus | None = None
    try:
        system.start()
        prometheus = Prometheus(root / "prometheus", {})
        prometheus.config = prometheus_config(system, prometheus.root, prometheus.port)
        prometheus.start()
        wait_for(lambda: prometheus.value('sum(up{job=~"intake|routing|supervision|scoring"})') == len(SERVICES),
                 WAIT_S, "Prometheus scraping every service")
        yield Stack(system, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        system.stop()


def test_submitted_cases_appear_in_the_series(stack: Stack) -> None:
    p = stack.prometheus
    before = p.value("sum(xf_intake_cases_received_total)") or 0
    stack.post_cases(8)
    wait_for(lambda: p.value("sum(xf_intake_cases_received_total)") == before + 8, WAIT_S,
             "intake's counter of received cases in Prometheus")
    channels = {r["metric"]["channel"]: float(r["value"][1]) for r in
                p.query("sum by (channel) (xf_intake_cases_received_total)")}
    assert set(channels) == {"walk_in", "letter", "phone", "online"}, channels
    # Routing applied each one, and supervision counts them open (its gauge is read at scrape time).
    wait_for(lambda: (p.value('sum(xf_events_handled_total{consumer="routing", type="CaseReceived"})') or 0)
             >= before + 8, WAIT_S, "routing's handled CaseReceived events")
    wait_for(lambda: (p.value("sum(xf_supervision_open_cases)") or 0) >= before + 8, WAIT_S,
             "supervision's open cases")
    wait_for(lambda: (p.value('stream:xf_stream_messages:max{stream="CASES"}') or 0) >= before + 8, WAIT_S,
             "the recorded size of the CASES stream")
    wait_for(lambda: p.value('consumer:xf_consumer_lag_messages:max{consumer="routing"}') == 0, WAIT_S,
             "routing's lag back to 0")


def test_nats_connected_reads_1_on_every_service_without_a_readyz_call(stack: Stack) -> None:
    p = stack.prometheus
    connected = wait_for(lambda: (r := p.query("xf_nats_connected")) and len(r) == len(SERVICES) and r, WAIT_S,
                         "xf_nats_connected of every service")
    assert {r["metric"]["job"]: r["value"][1] for r in connected} == {s: "1" for s in SERVICES}
    # No one asked /readyz: the services count every request by route.
    assert p.query('xf_http_requests_total{route="/readyz"}') == []
    assert p.query('xf_http_requests_total{route="/metrics"}'), "the requests by route are not counted"


@pytest.mark.parametrize("service", SERVICES)
def test_service_metrics_pass_promtool_check_metrics(stack: Stack, service: str) -> None:
    text = stack.system.http.get(f"{stack.system.url(service)}/metrics").text
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, f"{service}: {result.stdout}{result.stderr}"


def test_every_rule_evaluates_without_error_on_the_services_series(stack: Stack) -> None:
    """Prometheus evaluated each recording and alert rule on what the services export (a rule can
    pass promtool and still fail at run time, e.g. on two series with the same labels)."""
    p = stack.prometheus

    def evaluated() -> list[dict] | None:
        rules = p.rules()
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None
    rules = wait_for(evaluated, WAIT_S, "every rule evaluated once")
    failing = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert failing == {}
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    for name in ("channel:xf_intake_cases_received:rate5m", "consumer:xf_consumer_lag_messages:max",
                 "job:xf_outbox_pending:max", "unit_state:xf_supervision_open_cases:max"):
        assert name in recorded
        wait_for(lambda name=name: p.query(name), WAIT_S, f"{name} recorded from the services' series")


def test_routing_killed_while_cases_arrive_fires_service_down(stack: Stack) -> None:
    p, system = stack.prometheus, stack.system
    assert stack.firing("XfServiceDown") == []
    handled_before = p.value('sum(xf_events_handled_total{consumer="routing", type="CaseReceived"})') or 0
    system.kill(system.replicas["routing"][0])
    stack.post_cases(5)  # they wait on the stream for routing
    firing = wait_for(lambda: stack.firing("XfServiceDown"), WAIT_S, "XfServiceDown firing")
    assert [a["labels"]["job"] for a in firing] == ["routing"], firing
    alert = firing[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook"] == "README.md#xfservicedown"

    system.start_replicas(["routing"])  # a fresh process: its counters start at 0
    wait_for(lambda: not stack.firing("XfServiceDown"), WAIT_S, "XfServiceDown resolved")
    wait_for(lambda: (p.value('sum(xf_events_handled_total{consumer="routing", type="CaseReceived"})') or 0) >= 5,
             WAIT_S, f"the 5 waiting cases routed (before the kill: {handled_before:.0f})")
    wait_for(lambda: p.value('consumer:xf_consumer_lag_messages:max{consumer="routing"}') == 0, WAIT_S,
             "routing's lag back to 0")


def test_nats_killed_fires_nats_disconnected(stack: Stack) -> None:
    p, system = stack.prometheus, stack.system
    assert stack.firing("XfNatsDisconnected") == []
    system.kill_nats()
    try:
        wait_for(lambda: (r := p.query("xf_nats_connected == 0")) and len(r) == len(SERVICES), WAIT_S,
                 "every service reading xf_nats_connected 0")
        firing = wait_for(lambda: len(f := stack.firing("XfNatsDisconnected")) == len(SERVICES) and f, WAIT_S,
                          "XfNatsDisconnected firing for every service")
        assert {a["labels"]["job"] for a in firing} == set(SERVICES)
        assert all(a["labels"]["severity"] == "critical" for a in firing)
    finally:
        system.start_nats()
    wait_for(lambda: p.value("min(xf_nats_connected)") == 1 and not stack.firing("XfNatsDisconnected"), WAIT_S,
             "every service reconnected and the alert resolved")
