"""Prometheus metrics of an admin (``ceylon-admin --metrics-port``), read at scrape time from a
view of the admin's state (:func:`ceylon_net.core.snapshot.metrics`): nothing is added to the
hot path but a few integer increments."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import sys
import threading
import time
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


def on_the_loop(loop: asyncio.AbstractEventLoop, view: Callable[[], dict[str, Any]],
                timeout: float = 10.0) -> Callable[[], dict[str, Any]]:
    """``view`` read on ``loop``'s thread, for a scrape in the server's: the admin's state
    is the loop's (read from another thread, a dict could change size as it is read, and
    counts taken as others change disagree)."""
    async def read() -> dict[str, Any]:
        return view()

    def call() -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout)

    return call


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
        tasks = GaugeMetricFamily("ceylon_tasks", "Tasks by state (each task in one)",
                                  labels=["state"])
        for state, n in v["tasks"].items():
            tasks.add_metric([state], n)
        yield tasks
        workers = GaugeMetricFamily("ceylon_workers", "Registered workers by state",
                                    labels=["state"])
        for state, n in v["workers"].items():
            workers.add_metric([state], n)
        yield workers
        yield GaugeMetricFamily("ceylon_workers_connected", "Workers connected",
                                value=v["connected"])
        yield GaugeMetricFamily("ceylon_workers_busy", "Workers running a task or more",
                                value=v["busy"])
        for key, value in v["counters"].items():
            name, doc = COUNTERS[key]
            yield CounterMetricFamily(name, doc, value=value)
        for key, h in v["histograms"].items():
            name, doc = HISTOGRAMS[key]
            yield HistogramMetricFamily(name, doc, buckets=h.buckets(), sum_value=h.total)


MAX_SCRAPES = 32  # connections the metrics endpoint serves at once
EXCHANGE_SECONDS = 10.0  # a connection's whole exchange, request read and answer written


class MetricsServer:
    """http://HOST:PORT/metrics, one thread a scrape. A scrape reads the admin's counters
    while its loop runs on: each figure is read whole (integers, small dicts), but two
    figures may be a round apart."""

    def __init__(self, view: Callable[[], dict[str, Any]], host: str, port: int) -> None:
        """Bind host:port (0: any free port); ConfigError when the port cannot be had."""
        # (imported here: prometheus_client and wsgiref, with the http.server and email they
        # import, cost an admin some 7 MiB, and most run without metrics)
        from wsgiref.simple_server import make_server

        from prometheus_client import CollectorRegistry, make_wsgi_app

        registry = CollectorRegistry(auto_describe=False)
        registry.register(AdminCollector(view))
        app = make_wsgi_app(registry)

        def only_metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") == "/metrics":
                return app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]

        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server, quiet = _classes(family == socket.AF_INET6)
            self.server = make_server(host, port, only_metrics, server, handler_class=quiet)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: {exc.strerror or exc}") from None
        self.port: int = self.server.server_port
        threading.Thread(target=self.server.serve_forever, args=(0.1,), name="metrics",
                         daemon=True).start()  # (it sees close() within 0.1 s)
        logger.info("metrics on {}{}", local_url(host, self.port, "/metrics"),
                    " (listening on every interface, without a token)"
                    if every_interface(host) else "")

    def close(self) -> None:
        """Stop serving (within 0.1 s) and free the port."""
        self.server.shutdown()
        self.server.server_close()


class _Capped:
    """A thread a connection (socketserver's ThreadingMixIn, after this), MAX_SCRAPES at
    once: more are closed at once (connections that send nothing, each holding a thread for
    its timeout, could pile up threads without end: the port takes no token). Each
    connection has EXCHANGE_SECONDS for its whole exchange, then is cut: the handler's
    timeout is per read, and clients dribbling a byte a second held every place for as long
    as they liked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._places = threading.BoundedSemaphore(MAX_SCRAPES)
        self._deadlines: dict[socket.socket, float] = {}  # of the connections served
        self._deadlines_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._places.acquire(blocking=False):
            self.shutdown_request(request)
            return
        with self._deadlines_lock:
            self._deadlines[request] = time.monotonic() + EXCHANGE_SECONDS
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._places.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._places.release()

    def shutdown_request(self, request: Any) -> None:
        # (forgotten before it is closed, under the lock: a cut never lands on a closed
        # socket whose descriptor a new connection may already have)
        with self._deadlines_lock:
            self._deadlines.pop(request, None)
        super().shutdown_request(request)  # type: ignore[misc]

    def service_actions(self) -> None:
        """Cut the connections past their deadline (serve_forever calls this every 0.1 s):
        the handler's blocked read or write ends, its thread closes the connection and
        frees the place."""
        super().service_actions()  # type: ignore[misc]
        now = time.monotonic()
        with self._deadlines_lock:
            for request, deadline in self._deadlines.items():
                if now >= deadline:
                    with contextlib.suppress(OSError):  # (the client went meanwhile)
                        request.shutdown(socket.SHUT_RDWR)


@functools.cache
def _classes(ipv6: bool) -> tuple[type, type]:
    """The server's classes (made at the first MetricsServer: see its imports)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Server(_Capped, ThreadingMixIn, WSGIServer):
        daemon_threads = True  # (a scrape under way does not hold the process)

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver printed a traceback to stderr for every connection reset or
            # timed out (not JSON under --log-json, and a flood of them from any client)
            logger.debug("metrics: a connection from {} ended in error: {!r}",
                         client_address, sys.exc_info()[1])
        # Scrapes that come together wait in the kernel rather than being refused and tried
        # again a second later (socketserver's own backlog is 5).
        request_queue_size = 128
        address_family = socket.AF_INET6 if ipv6 else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        timeout = 10  # seconds a scraper may stall mid-request before its thread lets it go

        def log_message(self, format: str, *args: Any) -> None:
            pass  # (not a line on stderr for every scrape)

    return Server, Quiet
