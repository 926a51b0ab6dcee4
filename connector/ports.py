"""The small interfaces between the core and the adapters.

The core never imports an adapter. Adapters register an :class:`Adapter` object under the
``connector.adapters`` entry-point group (see ``pyproject.toml``); :mod:`connector.registry`
finds them. An adapter builds a :class:`Source` (read), a :class:`Sink` (write-back) and a
sandbox emulator from the validated settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from connector.domain import Batch

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

    def counter(self, system: str) -> RequestCounter:
        return self.counters.setdefault(system, RequestCounter())


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

    @property
    def marker(self) -> str:
        """A short token written into the remote object so a crash can be reconciled."""
        import hashlib

        return "cn-" + hashlib.sha1(self.key.encode()).hexdigest()[:12]


@dataclass
class ActionResult:
    remote_id: str | None = None
    status: str = "done"  # done | sent | delivered | failed
    detail: str = ""


@runtime_checkable
class Sink(Protocol):
    """Executes planned actions against one external system."""

    system: str

    def supports(self, action_type: str) -> bool: ...

    def execute(self, action: PlannedAction) -> ActionResult:
        """Do it. Raise :class:`TransientError` to retry later, :class:`PermanentError` to fail."""

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        """After a crash left the action ``in_flight``: find its marker remotely.

        Return the result if the action already happened, None if it certainly did not.
        Raise if it cannot tell (the executor then does not retry a client message)."""


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
    warning: bool = False  # works, but weakens security: shown as WARN, does not fail `check`


class Adapter(Protocol):
    """What an adapter package registers under the ``connector.adapters`` entry point."""

    name: str  # the config section and record system: "bitrix24", "onec", "binotel", "sms"

    def configured(self, settings: "Settings") -> bool: ...

    def source(self, settings: "Settings", ctx: Context) -> Source | None: ...

    def sink(self, settings: "Settings", ctx: Context) -> Sink | None: ...

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]: ...

    def sandbox(self, company: "SyntheticCompany") -> "SandboxService | None": ...


class SandboxService(Protocol):
    """A loopback emulator seeded from the shared synthetic company."""

    def start(self) -> dict[str, str]:
        """Start serving on 127.0.0.1 (port 0) and return the environment variables that point
        a config at it (e.g. ``{"BITRIX24_WEBHOOK_URL": "http://127.0.0.1:5123/rest/1/x/"}``)."""

    def stop(self) -> None: ...
