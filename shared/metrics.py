"""Prometheus helpers. Each app gets its own registry (tests build many apps in one process).

Labels are codes and route templates only: never a case number, a name or any personal data.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServiceMetrics:
    """The metrics every service has; a service adds its own to ``registry``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("xf_http_requests_total", "HTTP requests by route template and status",
                                     ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram("xf_http_request_seconds", "HTTP request duration by route template",
                                      ["route"], registry=r,
                                      buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.outbox_pending = Gauge("xf_outbox_pending", "Outbox events not yet acknowledged by JetStream (the service's whole table)",
                                    registry=r)
        self.outbox_published = Counter("xf_outbox_published_total", "Outbox events acknowledged by JetStream",
                                        registry=r)
        self.outbox_publish_errors = Counter("xf_outbox_publish_errors_total",
                                             "Outbox publishes that failed and will be retried", registry=r)
        self.consumed = Counter("xf_consumed_events_total",
                                "Events taken from the stream, by consumer and outcome "
                                "(applied, duplicate, retried)", ["consumer", "outcome"], registry=r)
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
        self.nats_connected = Gauge("xf_nats_connected", "1 while the service's NATS connection is up",
                                    registry=r)
