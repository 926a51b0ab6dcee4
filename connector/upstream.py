"""What every upstream client shares: a total deadline per request, and no redirect with credentials.

``requests`` and ``smtplib`` time out per socket operation, so a server that drips one byte every
few seconds holds a request (and the sync) forever. A :class:`Deadline` watches one request from
outside and shuts its socket down when the time is up: the blocked read returns at once and the
client reports a clear timeout. Only the Bitrix24 client (aiohttp) had a total deadline before.

Requests that carry credentials (Basic auth, a key and secret in the body, a bearer token) never
follow a redirect: the client would re-send them to whatever host ``Location`` names.
:class:`GuardedSession` refuses every redirect and raises :class:`Redirected` with the target host;
each client maps it (and :class:`DeadlineExceeded`) onto the error tree with :func:`transport_error`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from connector.errors import PermanentError, TransientError, UpstreamError

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Deadline:
    """Shuts the watched sockets down once ``seconds`` have passed since ``__enter__``.

    ``expired`` tells the caller why its read failed. Sockets are given as getters, so a socket
    that is replaced mid-request (STARTTLS wraps it) is still the one that gets shut down.
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.expired = False
        self._sockets: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, get_socket: Callable[[], Any]) -> None:
        with self._lock:
            self._sockets.append(get_socket)
            expired = self.expired
        if expired:
            _shutdown(get_socket())

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            getters = list(self._sockets)
        for get in getters:
            _shutdown(get())


def _shutdown(sock: Any) -> None:
    """Unblock a read in another thread: shutdown, not close (the owner still closes it)."""
    if not isinstance(sock, socket.socket):
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain method: also right for an SSLSocket
    except OSError:
        pass


class DeadlineExceeded(requests.Timeout):
    """The whole request (connect, send, headers, body) took longer than its deadline."""

    def __init__(self, seconds: float, **kw: Any):
        self.seconds = seconds
        super().__init__(f"no complete answer within {seconds:g} s", **kw)


class Redirected(requests.RequestException):
    """The server answered with a redirect; it was not followed."""

    def __init__(self, target_host: str, status: int, **kw: Any):
        self.target_host = target_host
        self.status = status
        super().__init__(f"redirect ({status}) to {target_host}", **kw)


def redirect_target(url: str, location: str | None) -> str:
    """The host a ``Location`` header points at (relative locations stay on ``url``'s host)."""
    target = urlsplit(urljoin(url, location or ""))
    host = target.hostname or "?"
    return f"{host}:{target.port}" if target.port else host


def redirect_error(system: str, obj: str, target_host: str, status: int | None = None) -> PermanentError:
    return PermanentError(f"the server redirected the request to {target_host}; not followed, because the request "
                          f"carries credentials (check the configured URL: http instead of https, an old address?)",
                          system=system, obj=obj, status=status)


def transport_error(exc: BaseException, *, system: str, obj: str) -> UpstreamError | None:
    """:class:`DeadlineExceeded` and :class:`Redirected` on the error tree; None for anything else."""
    if isinstance(exc, DeadlineExceeded):
        return TransientError(f"no complete answer within {exc.seconds:g} s (the server is too slow or "
                              f"drips its answer); will retry", system=system, obj=obj)
    if isinstance(exc, Redirected):
        return redirect_error(system, obj, exc.target_host, exc.status)
    return None


# ---------------------------------------------------------------- requests plumbing

_current = threading.local()  # the Deadline of the request running in this thread


class _Watched:
    """An urllib3 connection that hands its socket to the current request's Deadline."""

    sock: Any

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(lambda: self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def _total(timeout: Any) -> float | None:
    """A request's ``timeout`` as one total: a number as is; of a ``(connect, read)`` pair, the larger."""
    if timeout is None:
        return None
    if isinstance(timeout, (tuple, list)):
        parts = [float(t) for t in timeout if t is not None]
        return max(parts) if parts else None
    return float(timeout)


class GuardedSession(requests.Session):
    """A ``requests`` session that never follows a redirect and bounds each request in total.

    The ``timeout`` given to a request becomes its total deadline (of a ``(connect, read)`` pair, the
    larger), from connect to the last byte of the body; ``deadline`` is used when a request gives none.
    """

    def __init__(self, deadline: float | None = None):
        super().__init__()
        self.deadline = deadline
        adapter = _Adapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        seconds = _total(kwargs.get("timeout")) or self.deadline
        if not seconds:
            response = super().send(request, **kwargs)
        else:
            with Deadline(seconds) as deadline:
                previous = getattr(_current, "deadline", None)
                _current.deadline = deadline
                try:
                    response = super().send(request, **kwargs)
                except requests.RequestException:
                    if deadline.expired:
                        raise DeadlineExceeded(seconds, request=request) from None
                    raise
                finally:
                    _current.deadline = previous
                if deadline.expired:  # a body cut short without a Content-Length may look complete
                    response.close()
                    raise DeadlineExceeded(seconds, request=request)
        if response.status_code in REDIRECT_STATUSES:
            target = redirect_target(request.url or "", response.headers.get("Location"))
            response.close()
            raise Redirected(target, response.status_code, request=request, response=response)
        return response
