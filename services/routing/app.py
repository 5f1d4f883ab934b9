"""Wiring of the routing service: ``create_app()`` builds a fresh app (tests build many)."""
from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.routing import api, handlers, learning, tables
from services.routing.classifier import Classifier
from services.routing.service import Routing, RoutingMetrics
from shared.clock import Clock
from shared.directory import Directory, load_directory
from shared.rules import load_routing
from shared.settings import Settings
from shared.wiring import ServicePlumbing

SERVICE = "routing"


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               directory: Directory | None = None) -> FastAPI:
    settings = settings or Settings()
    directory = directory or load_directory(settings.config_dir)
    config = load_routing(settings.config_dir, directory)
    metrics = RoutingMetrics()
    plumbing = ServicePlumbing(SERVICE, settings, tables.outbox, metrics, clock)
    # The corpus plus the clerks' examples of the shared table (services/routing/learning.py).
    classifier = Classifier(directory, settings.data_dir / "cache" / "jieba",  # private, not /tmp
                            source=learning.ExampleSource(plumbing.uow.engine, config, directory))
    routing = Routing(uow=plumbing.uow, directory=directory, config=config, classifier=classifier,
                      clock=plumbing.clock, metrics=metrics, settings=settings)

    async def warm_up() -> None:
        await asyncio.to_thread(routing.classifier.warm_up)
    plumbing.on_start.append(warm_up)
    plumbing.consume(handlers.HANDLERS, routing, tables.inbox)
    plumbing.workers.append(handlers.assignment_responder(routing, plumbing.bus))

    return plumbing.app(
        "Chooses each case's lead and co-handling units (`cases.assigned.<unit>`), routes a case again once the "
        "bureau approves a unit's objection (异议), names the body that answers a review (复查/复核), sends what it "
        "cannot place to triage, and gives important cases a lead leader.", api.build_router(routing), {"routing": routing})
