"""Prometheus metrics of an admin (``ceylon-admin --metrics-port``), read at scrape time from
the admin's own state and counters: nothing is added to the hot path but a few integer
increments."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .tasks import TaskStatus

if TYPE_CHECKING:
    from .admin import Admin

SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


class Histogram:
    """Cumulative-bucket histogram kept as plain ints (observed once per result)."""

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class AdminCollector:
    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def collect(self) -> Iterator[object]:
        a, board = self.admin, self.admin.board
        tasks = GaugeMetricFamily("ceylon_tasks", "Tasks by state", labels=["state"])
        counts = dict.fromkeys(TaskStatus, 0)
        for rec in board.records.values():
            counts[rec.status] += 1
        for status, n in counts.items():
            tasks.add_metric([status.value], n)
        tasks.add_metric(["waiting_on_dependencies"], len(board.waiting))
        tasks.add_metric(["dead"], len(board.dead))
        tasks.add_metric(["unassigned"], len(a.unassigned))
        yield tasks
        workers = GaugeMetricFamily("ceylon_workers", "Connected workers by state",
                                    labels=["state"])
        slots = board.scheduler.workers.values()
        workers.add_metric(["connected"], len(a.get_connected_agents()))
        workers.add_metric(["draining"], sum(1 for s in slots if s.capacity == 0))
        workers.add_metric(["busy"], sum(1 for s in slots if s.running > 0))
        yield workers
        for name, doc, value in (
            ("ceylon_assignments", "Task assignments sent", a.stats.assignments),
            ("ceylon_results", "Task results recorded", a.stats.results),
            ("ceylon_bad_frames", "Frames dropped as malformed or hostile", a.bad_frames),
            ("ceylon_dropped_hellos", "Registrations dropped by the rate limit",
             a.dropped_hellos),
            ("ceylon_reconnects", "Workers that registered again", a.stats.reconnects),
            ("ceylon_workers_lost", "Workers declared lost", a.stats.lost),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, h in (
            ("ceylon_task_seconds", "Time a task ran on its worker", a.stats.run_seconds),
            ("ceylon_queue_wait_seconds", "Time from ready to assigned", a.stats.wait_seconds),
        ):
            yield HistogramMetricFamily(name, doc, buckets=h.buckets(), sum_value=h.total)


def serve_metrics(admin: Admin, host: str, port: int) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AdminCollector(admin))
    start_http_server(port, addr=host, registry=registry)
