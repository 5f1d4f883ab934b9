"""``xinfang bench --quick``: the CI smoke of the benchmark. It runs every section at tiny sizes on
SQLite, prints the table and writes the JSON; nothing here judges a figure (the machine is shared)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.run import SECTIONS


def test_bench_quick_writes_every_section_with_figures_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "services.cli", "bench", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["database"] == "sqlite" and report["runs"] == 1
    assert report["machine"]["cores"] >= 1 and report["versions"]["nats-server"]
    assert set(report["sections"]) == set(SECTIONS)
    for section, figures in report["sections"].items():
        assert figures, f"{section}: no figure"
        for f in figures:
            numbers = [f["median"], f["min"], f["max"], *f["values"]]
            assert all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in numbers), f
    throughput = [f for s in ("http", "import", "replicas", "bulk") for f in report["sections"][s]
                  if f["unit"] == "cases/s"]
    assert throughput and all(f["ratio_to_raw"] > 0 for f in throughput)

    assert "machine: " in run.stdout and "versions: python" in run.stdout and "command: xinfang bench --quick" in run.stdout
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert table[0].split("|")[1].strip() == "section"
    assert {line.split("|")[1].strip() for line in table[1:]} == set(SECTIONS)
