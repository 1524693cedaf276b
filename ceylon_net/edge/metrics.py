"""Prometheus metrics of an admin (``ceylon-admin --metrics-port``), read at scrape time from a
view of the admin's state (:func:`ceylon_net.core.snapshot.metrics`): nothing is added to the
hot path but a few integer increments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from loguru import logger

from ..errors import ConfigError
from ..settings import every_interface, local_url

COUNTERS = {
    "assignments": ("ceylon_assignments", "Task assignments sent"),
    "results": ("ceylon_results", "Task results recorded"),
    "bad_frames": ("ceylon_bad_frames", "Frames dropped as malformed or hostile"),
    "dropped_hellos": ("ceylon_dropped_hellos", "Registrations dropped by the rate limit"),
    "reconnects": ("ceylon_reconnects", "Workers that registered again"),
    "workers_lost": ("ceylon_workers_lost", "Workers declared lost"),
    "broadcasts": ("ceylon_broadcasts", "Broadcasts sent (numbered)"),
    "broadcasts_lost": ("ceylon_broadcasts_lost",
                        "Broadcasts an agent missed that the admin no longer kept"),
    "broadcasts_unconfirmed": ("ceylon_broadcasts_unconfirmed",
                               "Broadcasts an agent left without confirming"),
}
HISTOGRAMS = {
    "task_seconds": ("ceylon_task_seconds", "Time a task ran on its worker"),
    "queue_wait_seconds": ("ceylon_queue_wait_seconds", "Time from ready to assigned"),
}


class AdminCollector:
    def __init__(self, view: Callable[[], dict[str, Any]]) -> None:
        self.view = view

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        v = self.view()
        tasks = GaugeMetricFamily("ceylon_tasks", "Tasks by state", labels=["state"])
        for state, n in v["tasks"].items():
            tasks.add_metric([state], n)
        yield tasks
        workers = GaugeMetricFamily("ceylon_workers", "Connected workers by state",
                                    labels=["state"])
        for state, n in v["workers"].items():
            workers.add_metric([state], n)
        yield workers
        for key, value in v["counters"].items():
            name, doc = COUNTERS[key]
            yield CounterMetricFamily(name, doc, value=value)
        for key, h in v["histograms"].items():
            name, doc = HISTOGRAMS[key]
            yield HistogramMetricFamily(name, doc, buckets=h.buckets(), sum_value=h.total)


def serve_metrics(view: Callable[[], dict[str, Any]], host: str, port: int) -> None:
    """Serve http://HOST:PORT/metrics from ``view()`` (called at each scrape). ConfigError
    when the port cannot be had."""
    # (imported here: prometheus_client costs an admin 3.4 MiB, and most run without it)
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AdminCollector(view))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror}") from None
    logger.info("metrics on {}{}", local_url(host, port, "/metrics"),
                " (listening on every interface, without a token)"
                if every_interface(host) else "")
