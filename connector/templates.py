"""Sandboxed Jinja2 texts with a fixed vocabulary per rule type, rendered within bounds.

An unknown variable is a ``validate`` error, not a blank in a client's SMS: every template in
the config is rendered at load time against a sample context that has exactly the variables the
rule will provide.

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` (no ``client.update(...)``, no
attribute games), and, because the sandbox alone bounds neither time nor memory (nested
``range()`` loops, ``"x" * 10**9``), every render happens in a separate worker process: a render
that takes longer than :data:`RENDER_SECONDS` is stopped by killing the worker, one that needs
more than :data:`WORKER_MEMORY` fails there, and output is cut off at :data:`MAX_OUTPUT`
characters. The same bounds hold at ``validate``, on a SIGHUP reload and when planning.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import signal
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateRuntimeError
from jinja2.sandbox import ImmutableSandboxedEnvironment

RENDER_SECONDS = 2.0  # wall time for one render
MAX_OUTPUT = 65536  # characters of one rendered text (SMS, task, e-mail)
WORKER_MEMORY = 512 * 1024 * 1024  # address space of the render worker, bytes
MAX_RANGE = 10000  # range() in a template: larger ones are refused outright


class RenderLimit(TemplateRuntimeError):
    """A template went over a bound (time, output size, memory)."""


def money(value: float | int | str, decimals: int = 2) -> str:
    """``42000`` -> ``42 000.00``: space-grouped as in Ukrainian business letters (a plain space,
    so a Latin SMS stays in the cheaper GSM-7 alphabet)."""
    return f"{float(value):,.{decimals}f}".replace(",", " ")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox with a smaller ``range()``, and no operation that builds a huge value
    (``"x" * 10**9``, ``"x".ljust(10**9)``, ``9 ** 10**9``): refused before it allocates."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.filters["money"] = money
        self.globals["range"] = _small_range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise RenderLimit("the result would need too much memory (a power over 64)")
        if operator == "*":
            n = right if isinstance(left, (str, list, tuple)) and isinstance(right, int) else \
                left if isinstance(right, (str, list, tuple)) and isinstance(left, int) else None
            if n is not None and n * max(len(left if not isinstance(left, int) else right), 1) > MAX_OUTPUT:
                raise RenderLimit(f"the result would need too much memory ({n} repetitions)")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
        for v in (*args, *kwargs.values()) if __obj is not _small_range else ():
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_OUTPUT:
                raise RenderLimit(f"the result would need too much memory (an argument of {v})")
        return super().call(__context, __obj, *args, **kwargs)


def _small_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise RenderLimit(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
    return r


def _person(name: str) -> dict[str, Any]:
    return {"id": "7", "key": "bitrix24:user:7", "name": name, "email": "m@example.com", "first_name": name.split()[0]}


_CLIENT = {
    "key": "bitrix24:company:12",
    "id": "12",
    "title": "Acme LLC",
    "name": "Acme LLC",
    "first_name": "Olena",
    "greeting_name": "Olena",
    "phone": "+380501234567",
    "email": "client@example.com",
    "segment": "VIP",
    "tax_id": "12345678",
    "kind": "company",
    "fields": {},
    "system": "bitrix24",
}

BASE_VARS: dict[str, Any] = {
    "client": _CLIENT,
    "manager": _person("Ivan Petrenko"),
    "supervisor": _person("Head Of Sales"),
    "rule": {"name": "rule", "type": "forgotten"},
    "days": 60,
    "reason": "no contact for 60 days",
    "now": "2026-01-01 10:00",
    "today": "2026-01-01",
    "last_contact": {"kind": "call", "date": "2026-01-01"},
}

EXTRA_VARS: dict[str, dict[str, Any]] = {
    "release": {"previous_manager": _person("Petro Ivanenko"), "grace_days": 14},
    "lost": {
        "purchases": 3,
        "last_purchase": {"date": "2026-01-01", "amount": 100.0, "kind": "deal"},
        "cadence_days": 14,
        "callback_number": 1,
        "temperature": "warm",
    },
    "unpaid": {
        "invoice": {
            "key": "bitrix24:invoice:17",
            "id": "17",
            "title": "Invoice #17",
            "number": "17",
            "amount": 1250.5,
            "currency": "UAH",
            "due_date": "2026-01-01",
            "days_overdue": 5,
        }
    },
    "debtors": {
        "debt": {
            "amount": 1500.0,
            "currency": "UAH",
            "overdue_amount": 1500.0,
            "overdue_since": "2026-01-01",
            "days_overdue": 10,
            "documents": [{"number": "РН-000123", "date": "2025-12-18", "amount": 1500.0, "unpaid": 1500.0, "due": "2026-01-01"}],
        }
    },
    "missed_call": {
        "call": {"phone": "+380501234567", "started_at": "2026-01-01 10:00", "wait_s": 20, "id": "1"},
        "callback_minutes": 15,
    },
    "forgotten": {},
    "greetings": {
        "occasion": {"name": "birthday", "title": "birthday", "date": "01.01.2026", "year": 2026},
        "purchases": [{"date": "01.12.2025", "amount": 100.0, "kind": "deal"}],
        "last_purchase": {"date": "01.12.2025", "amount": 100.0, "kind": "deal"},
    },
}


def variables_for(rule_type: str) -> dict[str, Any]:
    return {**BASE_VARS, **EXTRA_VARS.get(rule_type, {})}


# ---------------------------------------------------------------- the render worker

def _worker_main(conn: Any) -> None:
    """The worker process: render what arrives, answer ``("ok", text)`` or ``("error", message)``."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    env = _Environment()
    compiled = lru_cache(maxsize=1024)(env.from_string)
    conn.send(("ready", ""))
    while True:
        try:
            template, context = conn.recv()
        except EOFError:
            return
        try:
            parts: list[str] = []
            size = 0
            for chunk in compiled(template).generate(**context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise RenderLimit(f"the text is longer than {MAX_OUTPUT} characters")
                parts.append(chunk)
            conn.send(("ok", "".join(parts)))
        except TemplateError as e:
            conn.send(("error", e.message or str(e)))
        except MemoryError:
            conn.send(("error", "the template needs too much memory"))
        except Exception as e:  # anything a template can raise inside the sandbox  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"[:300]))


class _Worker:
    """One render worker per process, restarted after a render had to be stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or locks
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child,), name="connector-templates", daemon=True)
        process.start()
        child.close()
        if not parent.poll(60) or parent.recv()[0] != "ready":
            process.kill()
            raise RuntimeError("the template worker did not start")
        self._process, self._conn = process, parent

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def render(self, template: str, context: dict[str, Any]) -> str:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._kill()
                self._start()
            try:
                self._conn.send((template, context))
                answered = self._conn.poll(RENDER_SECONDS)
                reply = self._conn.recv() if answered else None
            except (EOFError, OSError):
                self._kill()
                raise RenderLimit("the template stopped its renderer (too much memory?)") from None
            if reply is None:
                self._kill()
                raise RenderLimit(f"rendering took longer than {RENDER_SECONDS:g} s (nested loops?)")
        kind, value = reply
        if kind == "ok":
            return value
        raise RenderLimit(value)


_worker = _Worker()


_here = _Environment()
_compiled = lru_cache(maxsize=4096)(_here.from_string)


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template within the bounds; raises :class:`jinja2.TemplateError` on unknown
    variables, unsafe calls and bounds exceeded.

    In the main thread (every command, the daemon's cycles, a SIGHUP reload) the render runs here,
    stopped by a SIGALRM timer after :data:`RENDER_SECONDS` (thousands of texts a plan cost
    microseconds each, in the config's language); elsewhere it goes to the worker process."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return _worker.render(template, context)
    if signal.getsignal(signal.SIGALRM) is not _stop:
        signal.signal(signal.SIGALRM, _stop)  # the connector has no other use for SIGALRM
    signal.setitimer(signal.ITIMER_REAL, RENDER_SECONDS)
    try:
        parts: list[str] = []
        size = 0
        for chunk in _compiled(template).generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise RenderLimit(f"the text is longer than {MAX_OUTPUT} characters")
            parts.append(chunk)
        return "".join(parts)
    except MemoryError:
        raise RenderLimit("the template needs too much memory") from None
    except RecursionError:
        raise RenderLimit("the template recurses too deeply") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _stop(signum: int, frame: Any) -> None:
    raise RenderLimit(f"rendering took longer than {RENDER_SECONDS:g} s (nested loops?)")


def pick_variant(variants: list[str], client_key: str, sent_before: int) -> str:
    """A client's own starting text, then the next one each time: with two or more variants a
    client never gets the same text twice in a row (``sent_before`` counts earlier sends)."""
    h = int(hashlib.sha1(client_key.encode()).hexdigest(), 16)
    return variants[(h + sent_before) % len(variants)]


def _texts(obj: Any, loc: tuple) -> Iterable[tuple[tuple, str]]:
    """Every template string inside an action model, with its config location."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            alias = type(obj).model_fields[name].alias or name
            yield from _texts(value, loc + (alias,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _texts(v, loc + (i,))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _texts(v, loc + (k,))
    elif isinstance(obj, str) and ("{{" in obj or "{%" in obj):
        yield loc, obj


def check_templates(settings: Any) -> list[tuple[tuple, str]]:
    """Render every template of every rule against its rule type's vocabulary."""
    problems: list[tuple[tuple, str]] = []
    for ri, rule in enumerate(settings.rules):
        ctx = variables_for(rule.type)
        parts: list[tuple[tuple, Any]] = [(("rules", ri, "actions"), rule.actions)]
        for si, step in enumerate(rule.escalate):
            parts.append((("rules", ri, "escalate", si, "actions"), step.actions))
        if rule.type == "release":
            parts.append((("rules", ri, "reassign"), rule.reassign))
        if rule.type == "greetings":
            parts.append((("rules", ri, "channels"), rule.channels))
            if rule.offer is not None:
                parts.append((("rules", ri, "offer", "channels"), rule.offer.channels))
        for base, obj in parts:
            for loc, text in _texts(obj, base):
                try:
                    render(text, ctx)
                except TemplateError as e:
                    problems.append((loc, f"template error: {e.message or e}"))
    return problems
