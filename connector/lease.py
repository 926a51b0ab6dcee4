"""One runner per store: a lease row in the store itself, held by ``run``, the daemon and ``sync``.

Taking the lease is one compare-and-set statement (``UPDATE lease ... WHERE owner = me OR
expires_at < now``), which SQLite and PostgreSQL both execute atomically, so two processes can
never both hold it. The holder renews it from a heartbeat thread; a holder killed with SIGKILL
stops renewing and its lease expires after ``ttl`` seconds, when another process may take over.
Lease times are always the real clock: a simulated ``--now`` never touches them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from connector.errors import ConnectorError
from connector.store import Store, lease

log = logging.getLogger("connector.lease")

NAME = "runner"


@dataclass
class Holder:
    owner: str
    pid: int | None
    host: str | None
    since: datetime | None
    expires_at: datetime | None


class LeaseHeld(ConnectorError):
    """Another process holds the store; ``holder`` says who."""

    def __init__(self, holder: Holder):
        self.holder = holder
        since = holder.since.astimezone().strftime("%Y-%m-%d %H:%M:%S") if holder.since else "?"
        until = holder.expires_at.astimezone().strftime("%H:%M:%S") if holder.expires_at else "?"
        super().__init__(f"store is held by PID {holder.pid} on {holder.host} since {since} "
                         f"(lease renewed until {until}); use --wait to wait for it")


class LeaseLost(ConnectorError):
    """The heartbeat found another owner: this process must stop acting on the store."""


def _now() -> datetime:
    return datetime.now(UTC)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Lease:
    """The runner lease of one store. Use as a context manager, or ``acquire`` / ``release``."""

    def __init__(self, store: Store, *, ttl: float = 60.0, wait: float | None = None, poll: float = 1.0):
        self.store = store
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held = False
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public

    @property
    def held(self) -> bool:
        return self._held and not self._lost.is_set()

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another process took the store (before any remote call)."""
        if not self.held:
            raise LeaseLost("the store lease was lost (another process took it over): stopping before the next call")

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait`` seconds (None: do not wait), else raise LeaseHeld."""
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while True:
            if self._try():
                self._held = True
                self._lost.clear()
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="connector-lease", daemon=True)
                self._thread.start()
                return
            holder = self.holder()
            if holder is None:  # released between the two statements: try again at once
                continue
            if deadline is None or time.monotonic() >= deadline:
                raise LeaseHeld(holder)
            time.sleep(min(self.poll, max(0.05, deadline - time.monotonic())))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._held:
            with self.store.tx() as conn:
                conn.execute(delete(lease).where(lease.c.name == NAME, lease.c.owner == self.owner))
        self._held = False

    def holder(self) -> Holder | None:
        with self.store.tx() as conn:
            r = conn.execute(select(lease).where(lease.c.name == NAME)).first()
        if r is None:
            return None
        return Holder(r.owner, r.pid, r.host, r.acquired_at, r.expires_at)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals

    def _try(self) -> bool:
        now = _now()
        values = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "acquired_at": now,
                  "heartbeat_at": now, "expires_at": now + timedelta(seconds=self.ttl)}
        with self.store.tx() as conn:
            if self.store.engine.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            res = conn.execute(insert(lease).values(name=NAME, **values).on_conflict_do_nothing(index_elements=["name"]))
            if res.rowcount == 1:
                return True
            res = conn.execute(
                update(lease).where(lease.c.name == NAME, (lease.c.owner == self.owner) | (lease.c.expires_at < now)).values(**values)
            )
            if res.rowcount == 1:
                log.info("took the store lease")
                return True
            # a holder on this host whose process is gone (killed, crashed) cannot renew: take over at once
            row = conn.execute(select(lease.c.owner, lease.c.pid, lease.c.host).where(lease.c.name == NAME)).first()
            if row is not None and row.host == socket.gethostname() and row.pid and row.pid != os.getpid() and not _alive(row.pid):
                res = conn.execute(update(lease).where(lease.c.name == NAME, lease.c.owner == row.owner).values(**values))
                if res.rowcount == 1:
                    log.warning("took over the store lease of PID %s on this host, which is no longer running", row.pid)
                    return True
        return False

    def _beat(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while not self._stop.wait(interval):
            now = _now()
            try:
                with self.store.tx() as conn:
                    res = conn.execute(update(lease).where(lease.c.name == NAME, lease.c.owner == self.owner)
                                       .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.ttl)))
            except ConnectorError as e:  # a busy store: try again at the next beat, the lease has slack
                log.warning("lease heartbeat failed: %s", e)
                continue
            if res.rowcount != 1:
                log.error("the store lease was taken over by another process; stopping")
                self._lost.set()
                return
