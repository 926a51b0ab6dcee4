"""One small exception tree, classified once per client.

Every adapter maps its wire errors onto these classes in a single function, so retry policy
(tenacity predicates on these classes) and the CLI's exit codes never look at HTTP details.
Messages pass through :func:`connector.redact.redact`, so a secret can never leak through
``str(error)``.
"""

from __future__ import annotations

from connector.redact import redact


class ConnectorError(Exception):
    """Root of everything the connector raises on purpose."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return redact(super().__str__())


class ConfigError(ConnectorError):
    """The YAML or environment is wrong; ``problems`` lists every ``FILE:LINE: path: message``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UpstreamError(ConnectorError):
    """An external system failed: names the system, the object and the remote code."""

    def __init__(
        self,
        message: str,
        *,
        system: str,
        obj: str = "",
        code: str | int | None = None,
        status: int | None = None,
        ambiguous: bool = False,
    ):
        self.ambiguous = ambiguous  # the remote may have applied the request anyway (timeout, 5xx after sending)
        self.system = system
        self.obj = obj
        self.code = code
        self.status = status
        self.message = message
        parts = [system]
        if obj:
            parts.append(obj)
        head = " ".join(parts)
        tail = f" [{code}]" if code not in (None, "") else ""
        if status:
            tail += f" (HTTP {status})"
        super().__init__(f"{head}: {message}{tail}")


class TransientError(UpstreamError):
    """Worth retrying with back-off: timeouts, 5xx, overload."""


class RateLimited(TransientError):
    """The server asked us to slow down; ``retry_after`` is the wait it asked for, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class PermanentError(UpstreamError):
    """Retrying cannot help."""


class AuthError(PermanentError):
    """Credentials are wrong, expired beyond refresh, or lack a scope."""


class NotFound(PermanentError):
    """The remote object does not exist (any more)."""


class Rejected(PermanentError):
    """The remote refused this input (validation, permissions, stop-list)."""


class RecordError(ConnectorError):
    """One bad source record: skip it, warn with its id, go on."""

    def __init__(self, message: str, *, system: str, record_id: str = ""):
        self.system = system
        self.record_id = record_id
        super().__init__(f"{system} record {record_id}: {message}")


class StoreError(ConnectorError):
    """The local store is unusable (locked, corrupt, newer schema than this release)."""


class SafetyBrake(ConnectorError):
    """A rule would act on too many clients; refused unless forced."""


class Stopped(ConnectorError):
    """The process was told to stop (SIGTERM) while waiting: abandon the work, record nothing more."""
