"""A real Prometheus for the tests (Debian's ``prometheus`` package: ``prometheus`` and ``promtool``),
and the reading of PromQL the tests check deploy/prometheus and deploy/grafana with.

The binaries are not optional: a test that needs one fails, naming the package (``.ci/run``
installs it when missing).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.runtime import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
MISSING = ("{tool} is not installed: it comes with Debian's `prometheus` package "
           "(apt-get install -y --no-install-recommends prometheus; .ci/run installs it when missing)")


def tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; the test fails (never skips) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(MISSING.format(tool=name), pytrace=False)
    return path


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=120,
                          cwd=cwd)


class Prometheus:
    """``prometheus`` on a free loopback port with a temporary store, run with ``config`` (a dict,
    written to ``root/prometheus.yml``; rule files relative to ``root``)."""

    def __init__(self, root: Path, config: dict) -> None:
        self.root, self.config = root, config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "prometheus.yml"
        conf.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = open(self.root / "prometheus.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={conf}", f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        try:
            wait_healthy(self.url, self.proc, timeout, path="/-/ready")
        except RuntimeError as exc:
            raise RuntimeError(f"prometheus: {exc}: {self.log()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _get(self, path: str, **params: str) -> dict:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` has now: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self._get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it has none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: more than one series: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        """The alerts pending or firing now (labels, state, annotations)."""
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        """Every rule Prometheus evaluates, with its health and last error."""
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> dict:
        return self._get("/api/v1/targets", state="any")


def wait_for(condition, timeout: float, what: str, every: float = 0.25):  # noqa: ANN001, ANN201
    """Poll ``condition`` (a real query each time) until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --- reading PromQL ------------------------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan", "atan2"}
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not its functions, keywords, label names or
    values, durations, or a Grafana variable)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def rule_groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["groups"]


def alert_rules() -> list[dict]:
    return [r for g in rule_groups(DEPLOY / "rules" / "alerts.yml") for r in g["rules"]]


def recorded_names() -> set[str]:
    return {r["record"] for g in rule_groups(DEPLOY / "rules" / "recording.yml") for r in g["rules"]}


def rule_exprs() -> dict[str, str]:
    """Every rule's expression, by the name of what it records or alerts on."""
    out = {}
    for path in (DEPLOY / "rules" / "recording.yml", DEPLOY / "rules" / "alerts.yml"):
        for group in rule_groups(path):
            for rule in group["rules"]:
                out[rule.get("record") or rule["alert"]] = rule["expr"]
    return out


def dashboard_exprs(dashboard: dict) -> dict[str, str]:
    """Every PromQL expression of a Grafana dashboard, by "panel title / refId"."""
    out = {}

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out[f"{panel.get('title')} / {target.get('refId')}"] = target["expr"]
            walk(panel.get("panels", []))
    walk(dashboard["panels"])
    return out
