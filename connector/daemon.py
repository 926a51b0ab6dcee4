"""``connector run CONFIG``: cycles on the configured schedule until told to stop.

SIGTERM/SIGINT finish the current cycle and exit 0. SIGHUP reloads the config file; a bad new
config is refused (its problems are logged) and the old one stays in force. The optional Binotel
push receiver runs beside the cycles and writes calls straight into the store; so do the Bitrix24
application's handlers (``bitrix24.app``), whose events ask for an early cycle (after
``debounce_seconds``) that reads just the records they named. A cycle that fails
with anything at all (an odd upstream value raising ``TypeError``, a library's own exception) is
logged with its traceback (secrets masked), counted, and tried again next cycle; the push
receiver keeps serving.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from datetime import UTC, datetime

from connector.config import Settings, load_settings
from connector.errors import ConfigError, ConnectorError
from connector.metrics import install as install_metrics
from connector.ports import Clock, SystemClock
from connector.redact import redact
from connector.registry import adapters
from connector.runner import CycleReport, cycle, make_context, open_store
from connector.schedule import next_run

log = logging.getLogger("connector.daemon")
LOOPBACK = ["127.0.0.0/8", "::1/128"]


class Endpoints:
    """The inbound HTTP routes of every adapter (Binotel's push receiver, the Bitrix24 application's
    handlers) on as few listeners as possible: routes configured with the same ``listen`` share one
    :class:`HttpServer`, whose ``allow_from`` is then the union of theirs (an empty list meaning
    loopback). Different ``listen`` addresses get a listener each, so a PBX allowed on one port is
    not let in to the other."""

    def __init__(self, settings: Settings, store, ctx, *, wake=None):
        from connector.httpserver import HttpServer, split_listen
        from connector.ports import CallRecordings, HostedApplication

        self.push = None
        self.apps: list = []
        self.servers: list[HttpServer] = []
        found = [a for a in adapters().values() if isinstance(a, HostedApplication) and a.app_configured(settings)]
        pbx = [a for a in adapters().values() if isinstance(a, CallRecordings) and a.configured(settings)]

        def recordings(call_id: str) -> str | None:
            return next((url for a in pbx if (url := a.record_url(settings, ctx, call_id))), None)

        for adapter in found:
            self.apps.append(adapter.app_endpoint(settings, ctx, store, wake=wake, recordings=recordings if pbx else None))
        groups: dict[tuple[str, int], list] = {}
        for ep in self.apps:
            groups.setdefault(split_listen(ep.listen), []).append(ep)
        push_cfg = settings.binotel.push if settings.binotel is not None else None
        shared = push_cfg is not None and split_listen(push_cfg.listen) in groups

        def on_calls(calls) -> None:
            store.write(calls)
            if wake is not None and self.apps:
                wake(0)  # a call to put on the client card: an early cycle

        for (host, port), eps in groups.items():
            allow: list[str] = []
            sources = [ep.allow_from for ep in eps] + ([push_cfg.allow_from] if shared and push_cfg is not None and
                                                         split_listen(push_cfg.listen) == (host, port) else [])
            for lst in sources:
                allow += list(lst) if lst else LOOPBACK
            listen = eps[0].listen
            server = HttpServer(listen, sorted(set(allow)), name="connector-endpoint",
                                max_body_bytes=max(ep.max_body_bytes for ep in eps))
            for ep in eps:
                ep.mount(server)
            self.servers.append(server)
            if shared and push_cfg is not None and split_listen(push_cfg.listen) == (host, port):
                self.push = self._push_server(settings, on_calls, server)
        if push_cfg is not None and self.push is None:
            self.push = self._push_server(settings, on_calls, None)

    @staticmethod
    def _push_server(settings: Settings, on_calls, server):
        for adapter in adapters().values():
            factory = getattr(adapter, "push_server", None)
            if factory and adapter.configured(settings):
                found = factory(settings, on_calls, server=server) if server is not None else factory(settings, on_calls)
                if found is not None:
                    return found
        return None

    def start(self) -> None:
        for server in self.servers:
            server.start()
        if self.push is not None:
            self.push.start()  # its own listener only when it shares none
        for ep in self.apps:
            ep.start()

    def stop(self) -> None:
        if self.push is not None:
            self.push.stop()
        for server in self.servers:
            server.stop()
        for ep in self.apps:
            ep.stop()


class Daemon:
    def __init__(self, path: str, settings: Settings, *, clock: Clock | None = None, lease=None):
        self.path = path
        self.settings = settings
        self.clock = clock or SystemClock()
        self.lease = lease
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.cycles = 0
        self.failed_cycles = 0  # cycles that raised (a metric to export)
        self.unexpected_errors = 0  # of those, not the connector's own errors: bugs or odd upstream data
        self._push = None
        self._endpoints: Endpoints | None = None
        self._wake_at: float | None = None  # monotonic time an event asked for a cycle (application events)
        self._wake_lock = threading.Lock()

    def _on_term(self, signum: int, frame: object) -> None:
        log.info("signal %s: stopping (a sync in progress ends after its current batch; nothing more is executed)", signum)
        self.stop.set()
        if getattr(self, "stop_wait", None) is not None:
            self.stop_wait.set()

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload.set()
        self.stop_wait.set()

    def _reload(self) -> None:
        self.reload.clear()
        try:
            new = load_settings(self.path)
        except ConfigError as e:
            log.error("reload refused, keeping the running config:\n%s", "\n".join(e.problems))
            return
        if new.store != self.settings.store:
            log.error("reload refused: the store cannot change while the daemon runs (restart it instead)")
            return
        self.settings = new
        from connector import i18n

        i18n.use(new.language)  # a changed `language:` applies from the next cycle
        self._restart_push()
        log.info("config reloaded from %s (%d rules)", self.path, len(new.rules))

    def _restart_push(self) -> None:
        """(Re)open the inbound endpoints: Binotel's push receiver and the Bitrix24 application's handlers."""
        if self._endpoints is not None:
            self._endpoints.stop()
            self._endpoints = self._push = None
        store = open_store(self.settings)
        endpoints = Endpoints(self.settings, store, make_context(store, self.clock), wake=self.wake)
        if endpoints.push is None and not endpoints.apps:
            return
        endpoints.start()
        self._endpoints, self._push = endpoints, endpoints.push

    def wake(self, delay: float) -> None:
        """An event asks for a cycle within ``delay`` seconds (later events join the same cycle)."""
        import time

        with self._wake_lock:
            at = time.monotonic() + max(delay, 0.0)
            self._wake_at = at if self._wake_at is None else min(self._wake_at, at)

    def _woken(self) -> bool:
        import time

        with self._wake_lock:
            return self._wake_at is not None and time.monotonic() >= self._wake_at

    def next_delay(self, now: datetime) -> float:
        """Seconds to the next scheduled cycle; a cron is read on the company's clock (``timezone``)."""
        nxt = next_run(self.settings.schedule, self.settings.timezone, now)
        return max(1.0, (nxt - now).total_seconds())

    def run_cycle(self, store) -> CycleReport:
        """One cycle; :mod:`connector.metrics` wraps this method to record its figures."""
        return cycle(self.settings, store, make_context(store, self.clock), execute=True, lease=self.lease,
                     should_stop=self.stop.is_set)

    def serve(self, *, max_cycles: int | None = None) -> int:
        self.stop_wait = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_term)
            signal.signal(signal.SIGINT, self._on_term)
            signal.signal(signal.SIGHUP, self._on_hup)
        self._restart_push()
        metrics = install_metrics(self)
        try:
            while not self.stop.is_set():
                if self.reload.is_set():
                    self._reload()
                with self._wake_lock:
                    self._wake_at = None  # this cycle reads what the events reported so far
                try:
                    store = self.lease.store if self.lease is not None else open_store(self.settings)
                    if self.lease is not None and not self.lease.held:
                        self.lease.acquire()  # taken over while we stalled: take it back, or LeaseHeld skips the cycle
                    if self.settings.reports:  # scheduled control reports: journaled here, sent by this cycle's executor
                        from connector.report_delivery import record_deliveries

                        record_deliveries(self.settings, store, self.clock.now())
                    rep = self.run_cycle(store)
                    done = rep.execution.done if rep.execution else 0
                    log.info("cycle %d: sources %s, %d action(s) done%s", self.cycles + 1,
                             "ok" if rep.sync.ok else "stopped" if rep.sync.stopped else "FAILED", done, "; " + "; ".join(rep.notes) if rep.notes else "")
                    for line in rep.refused:  # every refusal, by name, each cycle it happens
                        log.warning("refused: %s", line)
                    for line in rep.execution.notes if rep.execution else []:  # deferrals, cancellations: normal
                        log.info("%s", line)
                    for line in rep.execution.problems if rep.execution else []:  # failed, uncertain: to look at
                        log.warning("%s", line)
                except ConnectorError as e:
                    self.failed_cycles += 1
                    log.error("cycle failed: %s", e)
                except Exception as e:  # anything else must not end the daemon and its push receiver  # noqa: BLE001
                    self.failed_cycles += 1
                    self.unexpected_errors += 1
                    log.error("cycle %d failed unexpectedly (%s); retrying next cycle:\n%s", self.cycles + 1,
                              type(e).__name__, redact("".join(traceback.format_exception(e))))
                self.cycles += 1
                if max_cycles is not None and self.cycles >= max_cycles:
                    break
                self.stop_wait.clear()
                delay = self.next_delay(datetime.now(UTC))
                while not self.stop.is_set() and not self.reload.is_set() and not self._woken():
                    if self.stop_wait.wait(min(delay, 0.2 if self._endpoints is not None else 1.0)):
                        break
                    delay -= 0.2 if self._endpoints is not None else 1.0
                    if delay <= 0:
                        break
        finally:
            if self._endpoints is not None:
                self._endpoints.stop()
            if metrics is not None:
                metrics.stop()
        log.info("stopped after %d cycle(s)", self.cycles)
        return 0
