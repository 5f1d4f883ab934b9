"""The machine and the versions a run was measured on, and the memory of processes (from /proc)."""
from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import threading
from importlib import metadata

from sqlalchemy import text

from services.runtime import nats_server_binary


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def versions(postgres_engine=None) -> dict:  # noqa: ANN001
    out = {"python": platform.python_version()}
    try:
        out["nats-server"] = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True,
                                            timeout=10).stdout.strip().removeprefix("nats-server: ")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        out["nats-server"] = f"unknown ({exc})"
    for dist in ("nats-py", "faststream", "SQLAlchemy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["SQLite"] = sqlite3.sqlite_version
    if postgres_engine is not None:
        with postgres_engine.connect() as conn:
            out["PostgreSQL"] = conn.execute(text("SHOW server_version")).scalar_one()
    return out


def rss_mb(pid: int) -> float | None:
    """VmRSS of a live process, in MB (None: gone)."""
    for line in _lines(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


class RssPeaks:
    """The highest RSS of each named group of processes (summed over the group's processes) while running,
    sampled every ``every_s`` in a thread."""

    def __init__(self, pids: dict[str, list[int]], every_s: float = 0.25) -> None:
        self.pids, self.every_s = pids, every_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def sample(self) -> dict[str, float]:
        now = {name: sum(r for p in pids if (r := rss_mb(p)) is not None) for name, pids in self.pids.items()}
        for name, mb in now.items():
            self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> RssPeaks:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.readlines()
    except OSError:
        return []
