"""The small interfaces between the core and the adapters.

The core never imports an adapter. Adapters register an :class:`Adapter` object under the
``connector.adapters`` entry-point group (see ``pyproject.toml``); :mod:`connector.registry`
finds them. An adapter builds a :class:`Source` (read), a :class:`Sink` (write-back) and a
sandbox emulator from the validated settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from connector.domain import Batch
from connector.errors import Stopped, UpstreamError

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.sandbox import SyntheticCompany


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass
class FixedClock:
    """A clock pinned by ``--now`` (simulation and tests)."""

    at: datetime

    def now(self) -> datetime:
        return self.at


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class CappedClock:
    """Never later than the real clock: what sources stamp cursors and sweeps with, so a simulated
    ``--now`` in the future can never make the next real sync skip data."""

    inner: Clock

    def now(self) -> datetime:
        return min(self.inner.now(), datetime.now(UTC))


@dataclass
class RequestCounter:
    """Every client counts the HTTP requests it makes; benchmarks and ``status`` print it."""

    requests: int = 0
    by_method: dict[str, int] = field(default_factory=dict)

    def add(self, method: str, n: int = 1) -> None:
        self.requests += n
        self.by_method[method] = self.by_method.get(method, 0) + n


@dataclass
class Context:
    """What an adapter may use besides its own settings."""

    clock: Clock
    kv_get: Any = None  # callable(name) -> str | None: durable small values (rotated tokens)
    kv_set: Any = None  # callable(name, value) -> None
    counters: dict[str, RequestCounter] = field(default_factory=dict)
    progress: Any = None  # callable(stream, done, total) for progress bars, or None
    should_stop: Any = None  # callable() -> bool: the process was told to stop (the daemon's SIGTERM)

    def counter(self, system: str) -> RequestCounter:
        return self.counters.setdefault(system, RequestCounter())

    def sleep(self, seconds: float) -> None:
        """Wait like ``time.sleep``, but raise :class:`Stopped` as soon as the process is told to
        stop, so a back-off of minutes never holds a SIGTERM (clients use it for their retries)."""
        if self.should_stop is None:
            time.sleep(seconds)
            return
        end = time.monotonic() + max(seconds, 0.0)
        while True:
            if self.should_stop():
                raise Stopped("stopped while waiting to retry")
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))


@runtime_checkable
class Source(Protocol):
    """Reads one external system as streams of batches."""

    system: str

    def streams(self) -> list[str]:
        """Stream names in the order they must be pulled (users before clients before deals)."""

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        """Yield batches of records changed since ``cursor`` (everything when ``cursor`` is None
        or ``full``). Each batch's ``cursor`` is saved with its records, so a crash resumes."""


@dataclass
class PlannedAction:
    """One write-back the planner wants done; ``key`` makes it happen at most once.

    ``key`` is ``rule:subject:period:index``. ``payload`` is already rendered: texts are final,
    people are manager keys, dates are ISO strings. ``system`` names the sink that executes it.
    """

    key: str
    rule: str
    type: str  # task | field | reassign | comment | notify | trigger | workflow | sms | email
    system: str
    subject_key: str  # the client, invoice or call the action is about
    client_key: str | None
    payload: dict[str, Any]
    reason: str
    mode: str = "live"  # live | dry_run
    not_before: datetime | None = None  # client messages wait for allowed hours
    client_title: str = ""
    manager_name: str = ""

    depends_on: list[str] = field(default_factory=list)  # keys that must be done first (a reassignment before its messages)

    @property
    def marker(self) -> str:
        """A short token written into the remote object so a crash can be reconciled."""
        return marker_of(self.key)


def marker_of(key: str) -> str:
    import hashlib

    return "cn-" + hashlib.sha1(key.encode()).hexdigest()[:12]


@dataclass
class ActionResult:
    remote_id: str | None = None
    status: str = "done"  # done | sent | delivered | failed
    detail: str = ""
    remote_key: str | None = None  # the store key of the record the action created (the connector's own footprint)
    at: datetime | None = None  # when it happened remotely, when known (reconciled or adopted actions)


Outcome = ActionResult | UpstreamError  # per action in a batch: its result, or its own error


@runtime_checkable
class Sink(Protocol):
    """Executes planned actions against one external system, many per request where it can.

    Per-action failures are returned, not raised: one rejected command must not fail its batch.
    An error's ``ambiguous`` flag says the remote may have applied it anyway (a timeout, a 5xx):
    the executor then looks for the action's effect again before any re-execution.
    """

    system: str
    batch_size: int  # actions per request; the executor claims them in_flight together

    def supports(self, action_type: str) -> bool: ...

    def execute_batch(self, actions: list[PlannedAction]) -> dict[str, Outcome]:
        """Do them, in order; the outcome of each by action key (a missing key counts as ambiguous)."""

    def reconcile_batch(self, actions: list[PlannedAction]) -> dict[str, ActionResult | None | UpstreamError]:
        """After a crash or an ambiguous failure: find each action's effect remotely.

        The result if it already happened, None if it certainly did not, an error if the remote
        cannot tell (the executor then never resends a message to a person)."""

    def close(self) -> None: ...


class OneByOneSink:
    """Base for sinks without a batch form: ``execute_batch``/``reconcile_batch`` loop over
    ``execute``/``reconcile``, each action's own upstream error becoming its outcome."""

    system = ""
    batch_size = 1  # claim each action just before its own call: a crash leaves at most one in doubt

    def supports(self, action_type: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def execute(self, action: PlannedAction) -> ActionResult:  # pragma: no cover - overridden
        raise NotImplementedError

    def reconcile(self, action: PlannedAction) -> ActionResult | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def execute_batch(self, actions: list[PlannedAction]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for a in actions:
            try:
                out[a.key] = self.execute(a)
            except UpstreamError as e:
                out[a.key] = e
        return out

    def reconcile_batch(self, actions: list[PlannedAction]) -> dict[str, ActionResult | None | UpstreamError]:
        out: dict[str, ActionResult | None | UpstreamError] = {}
        for a in actions:
            try:
                out[a.key] = self.reconcile(a)
            except UpstreamError as e:
                out[a.key] = e
        return out

    def close(self) -> None:
        return None


@runtime_checkable
class DeliveryTracking(Protocol):
    """Optional for message sinks: report delivery of what ``execute`` returned as ``sent``."""

    def delivery(self, sent: list[tuple[str, str]]) -> dict[str, ActionResult]:
        """``sent`` is ``[(action key, remote_id)]``; return final or updated results by key
        (status ``delivered`` or ``failed`` with a reason; omit keys still in transit)."""


@dataclass
class CheckResult:
    system: str
    what: str
    ok: bool
    detail: str = ""
    checked: bool = True  # False: this cannot be verified from here (``detail`` says why); never a failure
    warning: bool = False  # works, but weakens security: shown as WARN, does not fail `check`


class Adapter(Protocol):
    """What an adapter package registers under the ``connector.adapters`` entry point."""

    name: str  # the config section and record system: "bitrix24", "onec", "binotel", "sms"

    def configured(self, settings: "Settings") -> bool: ...

    def source(self, settings: "Settings", ctx: Context) -> Source | None: ...

    def sink(self, settings: "Settings", ctx: Context) -> Sink | None: ...

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]: ...

    def sandbox(self, company: "SyntheticCompany") -> "SandboxService | None": ...


@runtime_checkable
class ChangeHints(Protocol):
    """Optional for sources: records the remote system reported changed (events), so a sync can
    read just them. Polling stays the ground truth: a hint only ever adds reads."""

    def hint_changes(self, changed: "Mapping[str, Mapping[str, datetime]]") -> None:
        """``changed`` is kind -> source id -> when it was reported, taken before the pull."""


@runtime_checkable
class OwnActions(Protocol):
    """Optional for adapters: write-backs that follow from synced data rather than from a rule
    (the Bitrix24 application shows every PBX call on the client card). Journaled like any action,
    under the deterministic keys the adapter chooses."""

    def own_actions(self, settings: "Settings", snap: Any) -> "dict[str, list[PlannedAction]]":
        """Name (shown in ``plan`` as a rule) -> actions; already-journaled keys are no-ops."""


@runtime_checkable
class CallRecordings(Protocol):
    """Optional for PBX adapters: a fresh download link of a call's recording."""

    def record_url(self, settings: "Settings", ctx: Context, call_id: str) -> str | None: ...


class AppEndpoint(Protocol):
    """HTTP handlers a remote system calls, mounted on the connector's shared :class:`HttpServer`."""

    listen: str
    allow_from: list[str]
    max_body_bytes: int

    def mount(self, server: Any) -> None: ...

    def start(self) -> None:
        """Called once the server listens (re-registers what the remote must know, idempotently)."""

    def stop(self) -> None: ...


@runtime_checkable
class HostedApplication(Protocol):
    """Optional for adapters: the connector installed as an application of the remote system
    (Bitrix24's local server-side application): ``connector app serve|install-info|uninstall``."""

    def app_configured(self, settings: "Settings") -> bool: ...

    def app_install_info(self, settings: "Settings") -> list[tuple[str, str]]:
        """What the remote system's admin enters, as (label, value) lines."""

    def app_endpoint(self, settings: "Settings", ctx: Context, store: Any, *, wake: Any = None,
                     recordings: Any = None) -> AppEndpoint:
        """The handlers. ``wake(seconds)`` asks the daemon for an early cycle; ``recordings(call_id)``
        gives a call's recording link (from a :class:`CallRecordings` adapter)."""

    def app_uninstall(self, settings: "Settings", ctx: Context) -> list[str]:
        """Remove what the application registered remotely while it still may; lines for people."""


class SandboxService(Protocol):
    """A loopback emulator seeded from the shared synthetic company."""

    def start(self) -> dict[str, str]:
        """Start serving on 127.0.0.1 (port 0) and return the environment variables that point
        a config at it (e.g. ``{"BITRIX24_WEBHOOK_URL": "http://127.0.0.1:5123/rest/1/x/"}``)."""

    def stop(self) -> None: ...
