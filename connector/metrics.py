"""The daemon's figures for Prometheus, and ``/healthz``, recorded beside the cycle.

:class:`Metrics` wraps the daemon's ``run_cycle`` (as elastalert2's ``prometheus_wrapper`` wraps
its run loop) instead of sprinkling counters through the sync, the planner and the executor: each
cycle's :class:`~connector.runner.CycleReport` already holds every figure, so it is read once,
when the cycle returns. A private registry keeps two daemons in one process (tests) apart.

``/healthz`` answers 200 while the last good cycle (every source synced) is no older than three
scheduled intervals (a cron's night or weekend pause counts as the schedule, not as a fault), else
503 with the reason. A cycle whose actions partly failed is still a good cycle: those failures are
counted in ``connector_actions_total`` and shown by ``status``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from connector.errors import ConfigError
from connector.i18n import _
from connector.redact import redact
from connector.schedule import overdue_after

log = logging.getLogger("connector.metrics")

CYCLE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RUN_REFUSAL = "(run)"  # the label of a refusal of the whole run (safety.max_actions_per_run)


class Metrics:
    """Counters, a histogram and gauges for one daemon, and its health."""

    def __init__(self, daemon: Any, *, registry: CollectorRegistry | None = None):
        self.daemon = daemon
        self.registry = r = registry or CollectorRegistry()
        self.cycle_seconds = Histogram("connector_cycle_duration_seconds", "Wall time of one cycle (sync, plan, execute).",
                                       buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("connector_cycles", "Cycles by outcome: ok, source_failed, stopped, error.", ["outcome"], registry=r)
        self.rows = Counter("connector_rows_synced", "Records written to the store, per source.", ["source"], registry=r)
        self.source_failures = Counter("connector_source_failures", "Cycles in which a source failed, per source.", ["source"],
                                       registry=r)
        self.actions = Counter("connector_actions", "Executed actions by rule and resulting state (done, retry, failed, ...).",
                               ["rule", "state"], registry=r)
        self.refusals = Counter("connector_refusals", "Refusals (safety brake, empty release pool) by rule.", ["rule"], registry=r)
        self.last_success = Gauge("connector_last_success_timestamp_seconds", "Unix time the last good cycle ended.", registry=r)
        self.lease_held = Gauge("connector_lease_held", "1 while this daemon holds the store lease.", registry=r)
        self.lease_held.set_function(lambda: 1.0 if getattr(self.daemon.lease, "held", False) else 0.0)
        self.started_at = datetime.now(UTC)
        self.last_ok: datetime | None = None
        self.last_ok_seconds = 0.0
        self.last_problem: str | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._inner = daemon.run_cycle
        daemon.run_cycle = self.run_cycle

    # ------------------------------------------------------------------ the wrapped cycle

    def run_cycle(self, *args: Any, **kw: Any) -> Any:
        started = time.monotonic()
        try:
            rep = self._inner(*args, **kw)
        except BaseException as e:
            self.cycle_seconds.observe(time.monotonic() - started)
            self.cycles.labels("error").inc()
            self.last_problem = redact(f"the last cycle failed: {e}")
            raise
        self.record(rep, time.monotonic() - started)
        return rep

    def record(self, rep: Any, seconds: float) -> None:
        """Read one cycle's figures from its report."""
        self.cycle_seconds.observe(seconds)
        for s in rep.sync.sources:
            self.rows.labels(s.system).inc(s.rows)
            if s.error:
                self.source_failures.labels(s.system).inc()
        if rep.plan is not None:
            for rp in rep.plan.rules:
                n = (1 if rp.refused else 0) + len(rp.refusals)
                if n:
                    self.refusals.labels(rp.rule).inc(n)
            if rep.plan.refused_run:
                self.refusals.labels(RUN_REFUSAL).inc()
        if rep.execution is not None:
            for rule, counts in rep.execution.by_rule.items():
                for state, n in counts.items():
                    self.actions.labels(rule, state).inc(n)
        if rep.sync.stopped:
            self.cycles.labels("stopped").inc()
            self.last_problem = "the last cycle was stopped during the sync"
        elif not rep.sync.ok:
            self.cycles.labels("source_failed").inc()
            failed = "; ".join(f"{s.system}: {s.error}" for s in rep.sync.failed)
            self.last_problem = redact(f"a source failed in the last cycle: {failed}")
        else:
            self.cycles.labels("ok").inc()
            self.last_ok = datetime.now(UTC)
            self.last_ok_seconds = seconds
            self.last_success.set(self.last_ok.timestamp())
            self.last_problem = None

    # ------------------------------------------------------------------ health

    def health(self, now: datetime | None = None) -> tuple[bool, dict]:
        """``(healthy, body)``: healthy while the last good cycle is within three scheduled intervals."""
        now = now or datetime.now(UTC)
        s = self.daemon.settings
        since = self.last_ok or self.started_at
        # the last cycle's own length is grace: a cycle longer than the interval is slow, not dead
        due = overdue_after(s.schedule, s.timezone, since) + timedelta(seconds=self.last_ok_seconds)
        body: dict[str, Any] = {"last_success": self.last_ok.isoformat() if self.last_ok else None, "started": self.started_at.isoformat()}
        if now <= due:
            body["status"] = "ok"
            body["reason"] = "no cycle has finished yet" if self.last_ok is None else "the last cycle succeeded"
            if self.last_problem:
                body["reason"] += f"; {self.last_problem}"
            return True, body
        body["status"] = "unhealthy"
        when = f"{since.astimezone(due.tzinfo):%Y-%m-%d %H:%M %Z}"
        what = f"no good cycle since {when}" if self.last_ok else f"no good cycle since the start at {when}"
        body["reason"] = what + (f"; {self.last_problem}" if self.last_problem else "")
        return False, body

    # ------------------------------------------------------------------ the HTTP endpoint

    def app(self) -> Any:
        """WSGI: ``/healthz`` here, everything else is prometheus-client's exposition."""
        metrics_app = make_wsgi_app(self.registry)

        def application(environ: dict, start_response: Any) -> Any:
            if environ.get("PATH_INFO", "").rstrip("/") == "/healthz":
                ok, body = self.health()
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data)))])
                return [data]
            return metrics_app(environ, start_response)

        return application

    def start(self, host: str, port: int) -> tuple[str, int]:
        """Serve on ``host:port`` in a daemon thread; returns the bound address (port 0 picks one)."""
        self._server = make_server(host, port, self.app(), server_class=_ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="connector-metrics", daemon=True)
        self._thread.start()
        bound = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics, health on /healthz", bound[0], bound[1],
                 extra={"event": "metrics_listening", "host": bound[0], "port": bound[1]})
        return bound[0], bound[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def install(daemon: Any) -> Metrics | None:
    """Wrap the daemon's cycle and serve the figures, when the config asks for them."""
    cfg = daemon.settings.metrics
    if cfg is None:
        return None
    m = Metrics(daemon)
    try:
        m.start(*cfg.address)
    except OSError as e:  # the port is taken, the address is not this host's: the config's line to fix
        raise ConfigError([_("{where}: cannot listen on {address}: {problem}").format(
            where=daemon.settings.where("metrics", "listen"), address=cfg.listen, problem=e.strerror or e)]) from None
    return m


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s are not log lines."""
