"""Wiring of the scoring service: ``create_app()`` builds a fresh app (tests build many)."""
from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.scoring import api, handlers, tables
from services.scoring.service import Scoring, ScoringMetrics
from shared.clock import Clock, SystemClock
from shared.db import UnitOfWork
from shared.directory import Directory, load_directory
from shared.policy import load_policy
from shared.scoring_weights import load_weights
from shared.settings import Settings
from shared.wiring import ServicePlumbing

SERVICE = "scoring"


def build_scoring(settings: Settings, uow: UnitOfWork, metrics: ScoringMetrics, clock: Clock | None = None,
                  directory: Directory | None = None) -> Scoring:
    """Scoring folds each case as supervision does: the same deadline policy, service types and clock
    tolerance, from the same settings and config files."""
    return Scoring(uow=uow, directory=directory or load_directory(settings.config_dir),
                   weights=load_weights(settings.config_dir), clock=clock or SystemClock(), metrics=metrics,
                   policy=load_policy(settings.config_dir), clock_tolerance=timedelta(seconds=settings.clock_tolerance_s))


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               directory: Directory | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ScoringMetrics()
    plumbing = ServicePlumbing(SERVICE, settings, tables.outbox, metrics, clock)
    scoring = build_scoring(settings, plumbing.uow, metrics, plumbing.clock, directory)
    plumbing.consume(handlers.HANDLERS, scoring, tables.inbox)

    return plumbing.app(
        "A projection of the event stream: figures for any period and filter, scorecards, rankings, "
        "accountability and the bureau's reports.",
        api.build_router(scoring), {"scoring": scoring})
