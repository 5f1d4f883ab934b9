"""The scoring weights (DESIGN §6) from ``deploy/config/scoring.yaml``: each metric, its weight,
direction and cap, and the reward and penalty bands."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.directory import ConfigDoc

RATE_METRICS = {"closure_rate", "on_time_closure_rate", "satisfaction_rate"}
# objections_rejected (错退): an objection the bureau found unfounded, charged to the unit that still
# holds the case; returns (an approved objection) is no fault of the unit that receives the case.
COUNT_METRICS = {"ever_overdue", "open_overdue", "escalated_overdue", "reviews", "re_reviews", "returns",
                 "objections_rejected", "reviews_changed", "repeat", "extensions"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricWeight(_Model):
    metric: Literal[tuple(sorted(RATE_METRICS | COUNT_METRICS))]  # type: ignore[valid-type]
    direction: Literal["higher_is_better", "lower_is_better"]
    weight: float = Field(ge=0)
    cap: float = Field(ge=0)
    target: float = Field(1.0, ge=0, le=1)


class Band(_Model):
    floor: float
    band: str
    outcome: Literal["reward", "none", "penalty"]


class Weights(_Model):
    base: float = 100
    metrics: list[MetricWeight]
    bands: list[Band]


def load_weights(config_dir: Path | str) -> Weights:
    return ConfigDoc.read(Path(config_dir) / "scoring.yaml").parse(Weights)
