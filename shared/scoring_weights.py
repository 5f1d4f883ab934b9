"""The scoring weights (DESIGN §6) from ``deploy/config/scoring.yaml``: each metric, its weight,
direction and cap, and the reward and penalty bands."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.directory import ConfigDoc

RATE_METRICS = {"closure_rate", "on_time_closure_rate", "satisfaction_rate"}
# objections_rejected (错退): an objection the bureau found unfounded, charged to the unit that still
# holds the case; returns (an approved objection) is no fault of the unit that receives the case.
COUNT_METRICS = {"ever_overdue", "open_overdue", "escalated_overdue", "reviews", "re_reviews", "returns",
                 "objections_rejected", "reviews_changed", "repeat", "extensions", "review_overdue",
                 # what may earn points (more_is_better): 积案化解, 按期办结, 调解协议
                 "backlog_resolved", "closed_on_time", "mediated",
                 # what arises from a unit's area (a township's): 越级访, 集体访
                 "escalated_from_area", "collective_from_area"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricWeight(_Model):
    metric: Literal[tuple(sorted(RATE_METRICS | COUNT_METRICS))]  # type: ignore[valid-type]
    # higher/lower_is_better: points deducted below the target (a rate) or per case (a count);
    # more_is_better (a count): points added per case, up to the cap
    direction: Literal["higher_is_better", "lower_is_better", "more_is_better"]
    weight: float = Field(ge=0)
    cap: float = Field(ge=0)
    target: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _adds_only_counts(self) -> MetricWeight:
        if self.direction == "more_is_better" and self.metric in RATE_METRICS:
            raise ValueError(f"{self.metric} is a rate: more_is_better adds points per case, for counts only")
        return self


class Band(_Model):
    floor: float
    band: str
    outcome: Literal["reward", "none", "penalty"]
    consequence: str = ""  # 奖惩: what the band brings (通报表扬, 通报批评…)


class Weights(_Model):
    base: float = 100
    metrics: list[MetricWeight]
    bands: list[Band]
    # Fewer cases received than this: no band, no consequence, no rank (too few to judge a unit by).
    min_cases: int = Field(0, ge=0)
    # 责任追究: the consequence of each breach in the accountability list (约谈, 通报批评, 一票否决…)
    consequences: dict[str, str] = {}
    # 一票否决: an event that puts a unit in the lowest band whatever its score, and what it brings
    # (mass_incident: a 群体性事件 in the township's area, as a joint meeting on it records)
    veto: dict[Literal["mass_incident"], str] = {}


def load_weights(config_dir: Path | str) -> Weights:
    return ConfigDoc.read(Path(config_dir) / "scoring.yaml").parse(Weights)
