"""Prometheus helpers. Each app gets its own registry (tests build many apps in one process).

Labels are codes and route templates only: never a case number, a name or any personal data.
What is state (the NATS connection, the outbox backlog, a consumer's lag, open cases) is read when
Prometheus scrapes, never set by a side effect that may not have happened (a /readyz call).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
SCRAPE_READ_TIMEOUT_S = 8.0  # under Prometheus's 10 s scrape timeout: answer with what there is, never hang
# Seconds from the stream storing an event to a service's effect committed: milliseconds when the
# chain keeps up, minutes when a consumer was stopped or a drive floods it.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class ServiceMetrics:
    """The metrics every service has; a service adds its own to ``registry``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        # Run (awaited, with a time limit) before each scrape: they read what lives outside the
        # process (JetStream's consumer and stream state) into the gauges below.
        self.before_scrape: list[Callable[[], Awaitable[None]]] = []
        r = self.registry
        self.http_requests = Counter("xf_http_requests_total", "HTTP requests by route template and status",
                                     ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram("xf_http_request_seconds", "HTTP request duration by route template",
                                      ["route"], registry=r,
                                      buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.nats_connected = Gauge("xf_nats_connected", "1 while the service's NATS connection is up", registry=r)
        self.outbox_pending = Gauge("xf_outbox_pending", "Outbox events not yet acknowledged by JetStream "
                                    "(the service's whole table)", registry=r)
        self.outbox_oldest_age = Gauge("xf_outbox_oldest_unsent_age_seconds",
                                       "Age of the oldest outbox event not yet acknowledged by JetStream (0 when "
                                       "none waits)", registry=r)
        self.outbox_published = Counter("xf_outbox_published_total", "Outbox events acknowledged by JetStream",
                                        registry=r)
        self.outbox_publish_errors = Counter("xf_outbox_publish_errors_total",
                                             "Outbox publishes that failed and will be retried", registry=r)
        self.consumed = Counter("xf_consumed_events_total",
                                "Events taken from the stream, by consumer and outcome "
                                "(applied, duplicate, retried)", ["consumer", "outcome"], registry=r)
        self.events_handled = Counter("xf_events_handled_total", "Events applied, by consumer and event type",
                                      ["consumer", "type"], registry=r)
        self.event_latency = Histogram("xf_event_latency_seconds",
                                       "Seconds from the stream storing an event to the consumer's effect "
                                       "committed, by event type", ["consumer", "type"], registry=r,
                                       buckets=LATENCY_BUCKETS)
        self.dead_letters = Counter("xf_dead_letters_total", "Messages moved to the dead-letter subject, by kind "
                                    "(undecodable, forged, rejected, conflict, failed)", ["consumer", "kind"], registry=r)
        self.consumer_healthy = Gauge("xf_consumer_healthy", "1 while the consumer fetches and can dead-letter "
                                      "(its problem, if any, is on /readyz)", ["consumer"], registry=r)
        self.consumer_fetch_age = Gauge("xf_consumer_last_fetch_age_seconds",
                                        "Seconds since the consumer last fetched from its stream", ["consumer"],
                                        registry=r)
        self.consumer_restarts = Counter("xf_consumer_restarts_total", "Stalled consumers stopped and started again",
                                         ["consumer"], registry=r)
        self.dead_letter_failures = Counter("xf_dead_letter_publish_failures_total",
                                            "Dead letters that could not be published (the message comes back)",
                                            ["consumer"], registry=r)
        # JetStream's view, read at each scrape (absent while NATS cannot be asked).
        self.consumer_pending = Gauge("xf_consumer_pending_messages",
                                      "Messages in the stream the durable consumer has not been given yet (JetStream's "
                                      "num_pending)", ["consumer"], registry=r)
        self.consumer_ack_pending = Gauge("xf_consumer_ack_pending_messages",
                                          "Messages given to the consumer and not acknowledged yet", ["consumer"],
                                          registry=r)
        self.consumer_redelivered = Gauge("xf_consumer_redelivered_messages",
                                          "Messages given to the consumer more than once and not acknowledged yet",
                                          ["consumer"], registry=r)
        self.stream_messages = Gauge("xf_stream_messages", "Messages held by the stream (every service with a "
                                     "consumer reports it: use max by (stream))", ["stream"], registry=r)
        self.stream_bytes = Gauge("xf_stream_bytes", "Bytes held by the stream", ["stream"], registry=r)

    async def exposition(self) -> bytes:
        """The text Prometheus reads: the ``before_scrape`` readers first (bounded in time), then the
        registry, collected in a thread (some gauges read the database)."""
        if self.before_scrape:
            try:
                await asyncio.wait_for(asyncio.gather(*(read() for read in self.before_scrape)),
                                       SCRAPE_READ_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a scrape answers with what it has
                log.debug("a scrape-time reading failed", extra={"fields": {"error": repr(exc)}})
        return await asyncio.to_thread(generate_latest, self.registry)


class GaugesFrom(Collector):
    """Gauges computed when Prometheus scrapes: ``read()`` returns, per gauge name, the value of
    each label combination (a tuple in ``labels`` order). For state kept in a database table."""

    def __init__(self, registry: CollectorRegistry, gauges: Mapping[str, tuple[str, list[str]]],
                 read: Callable[[], Mapping[str, Mapping[tuple[str, ...], float]]]) -> None:
        self.gauges, self.read = gauges, read  # name -> (help, label names)
        registry.register(self)

    def describe(self) -> Iterable[GaugeMetricFamily]:  # registered without reading the database
        return [GaugeMetricFamily(name, doc, labels=labels) for name, (doc, labels) in self.gauges.items()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            values = self.read()
        except Exception as exc:  # noqa: BLE001 - the database away: the gauges are absent, the scrape works
            log.warning("scrape-time gauges could not be read", extra={"fields": {"error": repr(exc)}})
            return []
        out = []
        for name, (doc, labels) in self.gauges.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in sorted(values.get(name, {}).items()):
                family.add_metric(list(key), value)
            out.append(family)
        return out
