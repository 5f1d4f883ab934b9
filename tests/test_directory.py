"""The sample county loads; a bad config file stops start-up naming the file, line and field."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.directory import ConfigError, load_directory
from shared.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "deploy" / "config"


def test_the_sample_county_is_complete() -> None:
    d = load_directory(SAMPLE)
    assert len(d.townships) >= 12
    assert all(len(t.villages) >= 3 for t in d.townships.values())
    assert len([u for u in d.units.values() if u.kind == "department"]) >= 15
    assert {"forestry", "health", "market", "tax", "hrss", "natres", "housing", "police", "justice", "civil",
            "agri", "transport", "ecology", "education"} <= set(d.units)
    assert d.units[d.county.supervision_office].kind == "office"
    assert all(c.default_unit is None or c.default_unit in d.units for c in d.categories.values())
    assert len(d.leaders) >= 5 and len(d.agents) >= 40 and len(d.service_types) >= 5


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.mark.parametrize("file, old, new, expected", [
    ("categories.yaml", "default_unit: forestry", "default_unit: nosuchunit",
     r"categories\.yaml:\d+: categories\[\d+\]\.default_unit: unknown unit 'nosuchunit'"),
    ("townships.yaml", "code: donghu\n", "code: chengguan\n",
     r"townships\.yaml:\d+: townships\[1\]\.code: duplicate unit code 'chengguan'"),
    ("agents.yaml", "township: xishan", "township: atlantis",
     r"agents\.yaml:\d+: agencies\[\d+\]\.township: unknown township 'atlantis'"),
    ("agents.yaml", "time_limit_days: 20", "time_limit_days: -1",
     r"agents\.yaml:\d+: service_types\[0\]\.time_limit_days: Input should be greater than 0"),
    ("county.yaml", "code: QS", "code: qs lower",
     r"county\.yaml:2: code: String should match pattern"),
])
def test_a_bad_config_names_file_line_and_field(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    config = _copy(tmp_path)
    path = config / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_directory(config)


def test_the_line_points_at_the_offending_field(tmp_path: Path) -> None:
    config = _copy(tmp_path)
    path = config / "categories.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if "default_unit: health" in line)
    lines[index] = lines[index].replace("health", "hospital")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_directory(config)
    assert f"categories.yaml:{index + 1}:" in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    config = _copy(tmp_path)
    (config / "leaders.yaml").unlink()
    with pytest.raises(ConfigError, match="leaders.yaml: missing"):
        load_directory(config)


def test_a_service_does_not_start_on_a_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    config = _copy(tmp_path)
    path = config / "agents.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("township: xishan", "township: atlantis", 1),
                    encoding="utf-8")
    monkeypatch.setenv("XF_CONFIG_DIR", str(config))
    assert main(["run", "intake"]) == 2
    assert "agents.yaml:" in capsys.readouterr().err
