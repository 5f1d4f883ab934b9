"""deploy/prometheus and deploy/grafana, checked by the tools that will run them and against the code.

promtool (Debian's ``prometheus`` package; the tests fail without it, ``.ci/run`` installs it) checks
both scrape configs, the rules and their unit tests; every alert must have a case where it fires
and one where it does not, a severity, a summary, a description and a runbook entry in the README;
every series the rules and the dashboard read must be one a service exports (read from each
service's own /metrics) or one the recording rules make. The Kubernetes config, which Debian's
build cannot load (it has no Kubernetes discovery), is run by a real Prometheus with the pods'
metadata fed through file_sd, so its relabeling is what is checked.
"""
from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.runtime import NatsServer, free_port
from shared.settings import Settings
from tests.conftest import running
from tests.helpers import TEST_KEYS
from tests.prometheus_server import (
    BUILTIN_SERIES,
    DEPLOY,
    GRAFANA,
    ROOT,
    Prometheus,
    alert_rules,
    dashboard_exprs,
    metric_names,
    promtool,
    recorded_names,
    rule_exprs,
    wait_for,
)

SERVICES = ("intake", "routing", "supervision", "scoring")
SEVERITIES = {"critical", "warning", "info"}
DASHBOARD = GRAFANA / "dashboards" / "xinfang.json"


def ok(result) -> str:  # noqa: ANN001
    out = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, out
    return out


# --- promtool --------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-production.yml"])
def test_scrape_configs_pass_promtool_check_config(config: str) -> None:
    out = ok(promtool("check", "config", str(DEPLOY / config)))
    assert "WARNING" not in out, out  # e.g. a file_sd file that does not exist
    assert "SUCCESS: 2 rule files found" in out


def test_rules_pass_promtool_check_rules() -> None:
    out = ok(promtool("check", "rules", str(DEPLOY / "rules" / "recording.yml"), str(DEPLOY / "rules" / "alerts.yml")))
    assert out.count("SUCCESS") == 2, out


def test_rule_unit_tests_pass_promtool_test_rules() -> None:
    tests = sorted((DEPLOY / "tests").glob("*.yml"))
    assert tests, "no rule tests in deploy/prometheus/tests"
    out = ok(promtool("test", "rules", *map(str, tests)))
    assert out.count("SUCCESS") == len(tests), out


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    fires, quiet = set(), set()
    for path in (DEPLOY / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), f"alerts never seen firing in deploy/prometheus/tests: {sorted(names - fires)}"
    assert names - quiet == set(), f"alerts never seen quiet in deploy/prometheus/tests: {sorted(names - quiet)}"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        assert annotations["runbook"] == f"README.md#{name.lower()}", f"{name}: runbook {annotations['runbook']}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_entry_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", readme, re.M)}
    missing = [r["alert"] for r in alert_rules() if r["annotations"]["runbook"].split("#", 1)[1] not in anchors]
    assert not missing, f"README.md has no heading (runbook entry) for: {missing}"


# --- the names the rules and the dashboard read ------------------------------------------------------

SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["_sum", "_count", "_created"]}


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every metric the four services export, name → type, from each one's own /metrics (the app
    started on a real NATS and SQLite: which metrics exist does not depend on the database): a
    family without samples yet still names itself and its type. Counters by their ``_total`` name,
    as they are written."""
    root = tmp_path_factory.mktemp("exported-metrics")
    nats_server = NatsServer(root / "nats", free_port())
    nats_server.start()
    settings = Settings(data_dir=root / "var", nats_url=nats_server.url, log_level="WARNING", **TEST_KEYS,
                        **{f"{s}_db_url": f"sqlite:///{root / s}.db" for s in SERVICES})
    out: dict[str, str] = {}
    try:
        for service in SERVICES:
            for client in running(service, settings):
                text = client.get("/metrics").text
            for family in text_string_to_metric_families(text):
                if family.name.endswith("_created"):  # a counter's creation time, exposed as its own family
                    continue
                out[family.name + ("_total" if family.type == "counter" else "")] = family.type
    finally:
        nats_server.stop()
    yield out


@pytest.fixture(scope="module")
def exported(families: dict[str, str]) -> set[str]:
    """Every series name the services export (a histogram's _bucket, _sum, _count; a counter's _total)."""
    names = set()
    for name, kind in families.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        names |= {base + s for s in SUFFIXES.get(kind, [""])}
    return names


def test_rules_read_only_series_the_services_export(exported: set[str]) -> None:
    known = exported | recorded_names() | BUILTIN_SERIES
    unknown = {name: sorted(metric_names(expr) - known) for name, expr in rule_exprs().items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown


def test_dashboard_reads_only_series_the_services_export(exported: set[str]) -> None:
    known = exported | recorded_names() | BUILTIN_SERIES
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    unknown = {panel: sorted(metric_names(expr) - known) for panel, expr in exprs.items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown


def test_readme_metrics_table_lists_every_exported_metric(families: dict[str, str]) -> None:
    """The README's metric table ("Operations / Monitoring", "Metrics") names each metric the services
    export, with its type, and no other."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^### Metrics\n(.*?)(?=^##)", readme, re.M | re.S)
    assert section, "README.md has no '### Metrics' section"
    rows = re.findall(r"^\| `(xf_\w+)` \| (\w+) \|", section.group(1), re.M)
    table = dict(rows)
    assert len(table) == len(rows), "a metric is listed twice"
    xf = {name: kind for name, kind in families.items() if name.startswith("xf_")}
    assert sorted(set(xf) - set(table)) == [], "exported, not in the README's table"
    assert sorted(set(table) - set(xf)) == [], "in the README's table, not exported"
    assert {n: k for n, k in table.items() if xf[n] != k} == {}, "type differs from the exported one"


def test_metric_names_reads_series_not_functions_labels_or_durations() -> None:
    expr = ('histogram_quantile(0.95, sum by (route, le) (rate(xf_http_request_seconds_bucket{job="intake", '
            'route=~"/api/.*"}[$__rate_interval]))) * 1e3 > on (job) group_left max by (job) '
            '(xf_outbox_pending offset 10m) or count(ALERTS{alertstate="firing"}) or vector(0)')
    assert metric_names(expr) == {"xf_http_request_seconds_bucket", "xf_outbox_pending", "ALERTS"}


# --- the dashboard and Grafana's provisioning ---------------------------------------------------------

def test_dashboard_is_valid_json_with_an_overview_and_a_row_per_service() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows[0] == "County overview" and set(SERVICES) <= set(rows), rows
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{p['title']}: outside the 24 columns"
        for target in p.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), p["title"]
    first_service_row = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] in SERVICES)
    overview = json.dumps(panels[:first_service_row])
    for series in ("xf_intake_cases_received", "xf_supervision_open_cases", "xf_supervision_overdue_cases",
                   "xf_consumer_pending_messages", "xf_dead_letters", "xf_outbox"):
        assert series in overview, f"the county overview shows nothing of {series}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"


def test_grafana_provisioning_names_the_prometheus_service_and_the_dashboards_folder() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "xinfang.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/xinfang"


# --- discovery: which targets, with which labels ---------------------------------------------------------

def fake_pod(name: str, app: str, port: int, port_name: str = "http", part_of: str = "xinfang",
             **meta: str) -> dict:
    """A target group as Kubernetes pod discovery makes it (the labels Prometheus documents)."""
    return {"targets": [f"10.1.0.{port % 250}:{port}"], "labels": {
        "__meta_kubernetes_namespace": "xinfang", "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of": part_of,
        "__meta_kubernetes_pod_container_port_name": port_name, **meta}}


def test_discovery_relabeling_makes_the_job_the_service_and_keeps_each_replica(tmp_path: Path) -> None:
    """prometheus-kubernetes.yml's pod relabeling and prometheus-production.yml's `hosts` job, run by
    a real Prometheus: Kubernetes discovery replaced by file_sd carrying the same meta labels (Debian's
    build has no Kubernetes discovery), the hosts file replaced by one listing two replicas."""
    pods = [fake_pod("intake-7d9f-a", "intake", 8101), fake_pod("intake-7d9f-b", "intake", 18101),
            fake_pod("routing-5c4b-a", "routing", 8102),
            fake_pod("intake-7d9f-a", "intake", 9999, port_name="debug"),  # not the http port
            fake_pod("other-1", "intake", 8105, part_of="elsewhere"),  # another system's pod
            fake_pod("scoring-1", "scoring", 8104, __meta_kubernetes_pod_annotation_prometheus_io_scrape="false"),
            fake_pod("scoring-old", "scoring", 8106, __meta_kubernetes_pod_phase="Succeeded"),
            fake_pod("nats-0", "nats", 7777, port_name="prom-metrics", part_of="")]
    (tmp_path / "pods.json").write_text(json.dumps(pods))
    hosts = [{"targets": ["10.20.0.12:8101", "10.20.0.12:8111"], "labels": {"service": "intake"}},
             {"targets": ["10.20.0.13:9000"], "labels": {"service": "unknown"}}]
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))

    kubernetes = yaml.safe_load((DEPLOY / "prometheus-kubernetes.yml").read_text())
    production = yaml.safe_load((DEPLOY / "prometheus-production.yml").read_text())
    jobs = []
    for job in kubernetes["scrape_configs"]:
        if "kubernetes_sd_configs" in job:
            job = copy.deepcopy(job)
            del job["kubernetes_sd_configs"]
            job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.json")]}]
            jobs.append(job)
    (hosts_job,) = [j for j in production["scrape_configs"] if j["job_name"] == "hosts"]
    jobs.append({**hosts_job, "file_sd_configs": [{"files": [str(tmp_path / "hosts.json")]}]})
    prometheus = Prometheus(tmp_path / "prometheus", {"global": {"scrape_interval": "1h"}, "scrape_configs": jobs})
    prometheus.start()
    def every_job_discovered() -> dict | None:  # each job discovers all its file's groups at once
        got = prometheus.targets()
        return got if {t["scrapePool"] for t in got["activeTargets"]} == {"xinfang", "nats", "hosts"} else None

    try:
        targets = wait_for(every_job_discovered, 60, "every job's targets")
    finally:
        prometheus.stop()
    active = sorted((t["labels"]["job"], t["labels"]["instance"], t["labels"].get("pod", "")) for t in
                    targets["activeTargets"])
    assert active == [("intake", "10.1.0.101:18101", "intake-7d9f-b"), ("intake", "10.1.0.101:8101", "intake-7d9f-a"),
                      ("intake", "10.20.0.12:8101", ""), ("intake", "10.20.0.12:8111", ""),
                      ("nats", "10.1.0.27:7777", "nats-0"), ("routing", "10.1.0.102:8102", "routing-5c4b-a")], active
    for t in targets["activeTargets"]:
        assert "service" not in t["labels"], t["labels"]  # the hosts file's label became the job
        if t["labels"]["job"] != "intake" or t["labels"].get("pod"):
            assert t["labels"]["namespace"] == "xinfang"
    dropped = sorted((t["discoveredLabels"]["job"], t["discoveredLabels"].get("__meta_kubernetes_pod_name", ""),
                      t["discoveredLabels"]["__address__"]) for t in targets["droppedTargets"]
                     if t["discoveredLabels"]["job"] != "nats")
    assert dropped == [("hosts", "", "10.20.0.13:9000"),  # a service the hosts file should not name
                       ("xinfang", "intake-7d9f-a", "10.1.0.249:9999"),  # not the http port
                       ("xinfang", "nats-0", "10.1.0.27:7777"), ("xinfang", "other-1", "10.1.0.105:8105"),
                       ("xinfang", "scoring-1", "10.1.0.104:8104"),  # opted out
                       ("xinfang", "scoring-old", "10.1.0.106:8106")], dropped  # finished
