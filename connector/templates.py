"""Sandboxed Jinja2 texts with a fixed vocabulary per rule type.

An unknown variable is a ``validate`` error, not a blank in a client's SMS: every template in
the config is rendered at load time against a sample context that has exactly the variables the
rule will provide.
"""

from __future__ import annotations

import _signal  # getsignal without signal's enum conversion (a failed Handlers(value) per call)
import contextvars
import hashlib
import multiprocessing
import signal
import threading
from collections.abc import Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateRuntimeError, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from connector import i18n, words
from connector.i18n import _

RENDER_SECONDS = 2.0  # wall time for one render
MAX_OUTPUT = 65536  # characters of one rendered text (SMS, task, e-mail)
WORKER_MEMORY = 512 * 1024 * 1024  # address space of the render worker, bytes
MAX_RANGE = 10000  # range() in a template: larger ones are refused outright


class RenderLimit(TemplateRuntimeError):
    """A template went over a bound (time, output size, memory)."""


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

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``client.title``: jinja tries the attribute first and falls back to the key, so every read
        # of an object variable raised and caught an AttributeError and ran the sandbox's checks (a
        # third of a short text's cost). A Text's keys are read directly, exactly where jinja would
        # end up: a name that is not one of its attributes (a dict method keeps winning, as in jinja).
        if type(obj) is Text and attribute in obj and attribute not in _TEXT_ATTRS:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for v in (*args, *kwargs.values()) if __obj is not _small_range else ():
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_OUTPUT:
                raise RenderLimit(f"the result would need too much memory (an argument of {v})")
        return super().call(__context, __obj, *args, **kwargs)


def _small_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise RenderLimit(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
    return r

LANGUAGE = "_language"  # put into every context by render(): filters format by the config's language wherever they run


def _speaking(language: str | None, fn: Any, *args: Any) -> Any:
    """Call ``fn`` with ``language`` current (in a copied context: the caller's stays as it was)."""
    def call() -> Any:
        if language in i18n.LANGUAGES:
            i18n.use(language)
        return fn(*args)

    return contextvars.copy_context().run(call)


def _plain(text: str) -> str:
    """Babel groups digits with no-break spaces; texts for people (an SMS above all) get a plain
    space, which looks the same and keeps a Latin SMS in the cheaper GSM-7 alphabet."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


@pass_context
def money(ctx: Any, value: float | int | str, currency: str | int | None = None, decimals: int = 2) -> str:
    """The ``money`` filter, by the config's language: ``{{ 42000 | money }}`` -> ``42 000,00``,
    ``{{ debt.amount | money(debt.currency) }}`` -> ``42 000,00 ₴``; ``money(0)`` rounds to whole units."""
    if isinstance(currency, int) and not isinstance(currency, bool):
        currency, decimals = None, currency
    amount = float(value)
    if currency:
        def fmt() -> str:
            if decimals == 2:
                return i18n.money(amount, str(currency))
            from babel.numbers import parse_pattern

            pattern = parse_pattern(i18n.locale().currency_formats["standard"])
            pattern.frac_prec = (decimals, decimals)
            return pattern.apply(amount, i18n.locale(), currency=str(currency), currency_digits=False)
        return _plain(_speaking(ctx.get(LANGUAGE), fmt))
    return _plain(_speaking(ctx.get(LANGUAGE), i18n.number, amount, decimals))




# ---------------------------------------------------------------- what variables are
# Objects render as text (``{{ last_contact }}`` -> "дзвінок 12.11.2026") while their attributes
# still work (``{{ last_contact.kind }}``). The text is made when the context is built, in the
# config's language; underneath they are a dict, a str and a float, so they pickle (a render may
# happen in another process) and the immutable sandbox renders them without calling back into
# the connector.


class Text(dict):
    """An object variable: attributes as keys, and how it reads as a whole (``str``)."""

    def __init__(self, text: str, /, **attrs: Any) -> None:
        super().__init__(attrs)
        self._text = text

    def __str__(self) -> str:
        return self._text


_TEXT_ATTRS = frozenset(dir(Text)) | {"_text"}


class TextList(list):
    """A list variable (``debt.documents``) that reads as one line."""

    def __init__(self, items: Iterable[Any], text: str) -> None:
        super().__init__(items)
        self._text = text

    def __str__(self) -> str:
        return self._text


class When(str):
    """A date (``12.11.2026``) or a local time to the minute (``12.11.2026 14:05``) as people here
    write it; ``.iso`` is the ISO 8601 form (``2026-11-12``) for fields and comparisons."""

    iso: str

    def __new__(cls, text: str, iso: str = "") -> When:
        obj = super().__new__(cls, text)
        obj.iso = iso or text
        return obj


class Amount(float):
    """A number that reads grouped by the locale (``42 000,00``) and still counts (``> 1000``)."""

    def __new__(cls, value: float, text: str = "") -> Amount:
        obj = super().__new__(cls, value)
        obj._text = text
        return obj

    def __str__(self) -> str:
        return getattr(self, "_text", "") or float.__repr__(self)


def day_var(d: date | datetime | str | None) -> When:
    """``date(2026, 11, 12)`` (or its ISO text) -> ``12.11.2026`` with ``.iso``; empty when unknown."""
    if d is None or d == "":
        return When("", "")
    if isinstance(d, str):
        try:
            d = date.fromisoformat(d[:10])
        except ValueError:
            return When(d, d)
    if isinstance(d, datetime):
        d = d.date()
    return When(i18n.day(d), d.isoformat())


def moment_var(t: datetime) -> When:
    """A local time (already in the config's time zone) -> ``12.11.2026 14:05`` with ``.iso``."""
    return When(i18n.moment(t), t.isoformat(timespec="minutes"))


def amount_var(value: float | int | None) -> Amount:
    v = float(value or 0.0)
    return Amount(v, _plain(i18n.number(v)))


def _money(amount: float, currency: str) -> str:
    return _plain(i18n.money(amount, currency or "UAH"))


def person_var(key: str | None, name: str | None, email: str | None = None) -> Text:
    """``manager``, ``supervisor``, ``previous_manager``: reads as the name."""
    shown = name or _("your manager")
    return Text(shown, id=(key or "").rsplit(":", 1)[-1], key=key or "", name=shown, email=email or "",
                first_name=shown.split()[0] if name else shown)


def client_var(*, key: str = "", title: str = "", first_name: str | None = None, phone: str = "", email: str = "",
               segment: str = "", tax_id: str = "", kind: str = "", fields: dict | None = None, system: str = "") -> Text:
    """``client``: reads as its title (an unknown caller: the phone number)."""
    shown = title or _("unknown client")
    return Text(shown, key=key, id=key.rsplit(":", 1)[-1] if key else "", title=shown, name=shown, first_name=first_name,
                greeting_name=first_name or _("dear client"), phone=phone, email=email, segment=segment, tax_id=tax_id,
                kind=kind, fields=dict(fields or {}), system=system)


def rule_var(name: str, type_: str) -> Text:
    return Text(name, name=name, type=type_)


def last_contact_var(kind: str | None, when: date | datetime | None) -> Text:
    """``last_contact``: "дзвінок 12.11.2026"; with none, "контактів ще не було" (``kind`` ``none``)."""
    if not kind or kind == "none" or when is None:
        return Text(_("no contact yet"), kind="none", name=words.contact_kind(None), date=day_var(when))
    d = day_var(when)
    return Text(_("{kind} on {date}").format(kind=words.contact_kind(kind), date=d), kind=kind,
                name=words.contact_kind(kind), date=d)


def last_purchase_var(when: date | datetime, amount: float, what: str) -> Text:
    """``last_purchase`` (lost): "реалізація в 1С від 12.11.2026 на суму 42 000,00"."""
    d, a = day_var(when), amount_var(amount)
    return Text(_("{kind} of {date} for {amount}").format(kind=words.purchase_kind(what), date=d, amount=str(a)),
                date=d, amount=a, kind=what, name=words.purchase_kind(what))


def invoice_var(*, key: str, title: str, number: str, amount: float, currency: str, due_date: date | None,
                days_overdue: int) -> Text:
    """``invoice`` (unpaid): "Рахунок №17 на суму 1 250,50 ₴, сплатити до 01.01.2026"."""
    d = day_var(due_date)
    return Text(_("{title} for {amount}, due {date}").format(title=title, amount=_money(amount, currency), date=d),
                key=key, id=key.rsplit(":", 1)[-1], title=title, number=number, amount=amount_var(amount),
                currency=currency, due_date=d, days_overdue=days_overdue)


def document_var(doc: dict[str, Any], currency: str) -> Text:
    """One shipment a debt is made of: "РН-000123 від 18.12.2025: не сплачено 1 500,00 ₴, строк 01.01.2026"."""
    attrs = dict(doc)
    for k in ("date", "due"):
        if k in attrs:
            attrs[k] = day_var(attrs[k])
    for k in ("amount", "unpaid"):
        if isinstance(attrs.get(k), int | float):
            attrs[k] = amount_var(attrs[k])
    unpaid = doc.get("unpaid", doc.get("amount"))
    text = _("{number} of {date}: {unpaid} unpaid, due {due}").format(
        number=doc.get("number") or "", date=attrs.get("date", ""),
        unpaid=_money(float(unpaid or 0.0), currency), due=attrs.get("due", ""))
    return Text(text, **attrs)


def debt_var(*, amount: float, currency: str, overdue_amount: float, overdue_since: date | None, days_overdue: int,
             documents: Iterable[dict[str, Any]] = ()) -> Text:
    """``debt`` (debtors): "42 000,00 ₴, з них 12 000,00 ₴ прострочено з 01.10.2026"."""
    since = day_var(overdue_since)
    if abs(overdue_amount - amount) < 0.005:
        text = _("{amount} overdue since {date}").format(amount=_money(amount, currency), date=since)
    else:
        text = _("{amount}, of which {overdue} overdue since {date}").format(
            amount=_money(amount, currency), overdue=_money(overdue_amount, currency), date=since)
    docs = [document_var(x, currency) for x in documents]
    return Text(text, amount=amount_var(amount), currency=currency, overdue_amount=amount_var(overdue_amount),
                overdue_since=since, days_overdue=days_overdue, documents=TextList(docs, "; ".join(str(x) for x in docs)))


def call_var(*, id: str, phone: str, started_at: datetime, wait_s: int) -> Text:
    """``call`` (missed_call): "дзвінок з номера +380501234567 (12.11.2026 14:05)"; ``started_at`` is local."""
    at = moment_var(started_at)
    return Text(_("call from {phone} at {time}").format(phone=phone, time=at), id=id, phone=phone, started_at=at,
                wait_s=wait_s)


def synced_invoice_var(*, key: str, title: str, number: str, amount: float, currency: str, stage: str) -> Text:
    """``invoice`` (invoice_sync): "Invoice #17 на суму 1 250,50 ₴"; ``stage`` is its stage id before the move."""
    return Text(_("{title} for {amount}").format(title=title, amount=_money(amount, currency)), key=key,
                id=key.rsplit(":", 1)[-1], title=title, number=number, amount=amount_var(amount), currency=currency, stage=stage)


def paid_by_var(*, key: str, kind: str, number: str, when: date | datetime | None, amount: float, currency: str,
                method: str) -> Text:
    """``document`` (invoice_sync): the 1C payment (or document marked paid) that shows the invoice
    paid, "ПН-000123 від 21.11.2026 на суму 24 000,00 ₴"; ``kind`` and ``method`` are codes."""
    d = day_var(when)
    return Text(_("{number} of {date} for {amount}").format(number=number, date=d, amount=_money(amount, currency)), key=key,
                kind=kind, number=number, date=d, amount=amount_var(amount), currency=currency, method=method)


def deal_var(*, key: str = "", title: str = "", stage: str = "", to: str = "") -> Text:
    """``deal`` (invoice_sync): the deal that moves with its last invoice, read as its title; empty when none."""
    return Text(title, key=key, id=key.rsplit(":", 1)[-1] if key else "", title=title, stage=stage, to=to)


def order_var(*, key: str, kind: str, number: str, when: date | datetime | None, amount: float, currency: str, state: str,
              shipment_number: str = "") -> Text:
    """``order`` (order_status): "КП-0000123 від 01.01.2026"; ``kind`` (order, sale, deal) and ``state`` are codes."""
    d = day_var(when)
    return Text(_("{number} of {date}").format(number=number, date=d), key=key, kind=kind, number=number, title=number, date=d,
                amount=amount_var(amount), currency=currency, state=state, shipment_number=shipment_number)


# ---------------------------------------------------------------- the vocabulary per rule type

_SAMPLE_NOW = datetime(2026, 1, 1, 10, 0)

# Sample values of every variable, built by the same functions as the real ones: ``validate``
# renders every template against them (only the names matter there, not the language).
BASE_VARS: dict[str, Any] = {
    "client": client_var(key="bitrix24:company:12", title="Acme LLC", first_name="Olena", phone="+380501234567",
                         email="client@example.com", segment="VIP", tax_id="12345678", kind="company", system="bitrix24"),
    "manager": person_var("bitrix24:user:7", "Ivan Petrenko", "m@example.com"),
    "supervisor": person_var("bitrix24:user:1", "Head Of Sales", "m@example.com"),
    "rule": rule_var("rule", "forgotten"),
    "days": 60,
    "reason": "no contact for 60 days",
    "now": moment_var(_SAMPLE_NOW),
    "today": day_var(_SAMPLE_NOW.date()),
    "last_contact": last_contact_var("call", _SAMPLE_NOW.date()),
}

EXTRA_VARS: dict[str, dict[str, Any]] = {
    "release": {"previous_manager": person_var("bitrix24:user:9", "Petro Ivanenko", "p@example.com"), "grace_days": 14},
    "lost": {
        "purchases": 3,
        "last_purchase": last_purchase_var(_SAMPLE_NOW.date(), 100.0, "deal"),
        "cadence_days": 14,
        "callback_number": 1,
        "temperature": "warm",
    },
    "unpaid": {
        "invoice": invoice_var(key="bitrix24:invoice:17", title="Invoice #17", number="17", amount=1250.5, currency="UAH",
                               due_date=_SAMPLE_NOW.date(), days_overdue=5),
    },
    "debtors": {
        "debt": debt_var(amount=1500.0, currency="UAH", overdue_amount=1500.0, overdue_since=_SAMPLE_NOW.date(), days_overdue=10,
                         documents=[{"number": "РН-000123", "date": "2025-12-18", "amount": 1500.0, "unpaid": 1500.0,
                                     "due": "2026-01-01"}]),
    },
    "missed_call": {
        "call": call_var(id="1", phone="+380501234567", started_at=_SAMPLE_NOW, wait_s=20),
        "callback_minutes": 15,
    },
    "forgotten": {},
    "greetings": {
        "occasion": Text("birthday", name="birthday", title="birthday", date=day_var(_SAMPLE_NOW.date()), year=2026),
        "purchases": TextList([last_purchase_var(_SAMPLE_NOW.date(), 100.0, "deal")], "01.01.2026"),
        "last_purchase": last_purchase_var(_SAMPLE_NOW.date(), 100.0, "deal"),
    },
    "rfm": {
        "rfm": {"score": "R4F5M3", "segment": "champions", "r": 4, "f": 5, "m": 3, "recency_days": 12, "frequency": 9,
                "monetary": 42000.0, "previous_score": "R3F5M3", "previous_segment": "loyal"},
    },
    "replenish": {
        "product": {"id": "water", "title": "Drinking water 19 l", "quantity": 5.0, "days_per_unit": 3.0, "bought": "2026-01-01",
                    "runs_out": "2026-01-16", "days_left": 2, "name": "Water 19 l"},
    },
    "recurring": {
        "deal": {"key": "bitrix24:deal:7", "id": "7", "title": "Water supply 2026", "amount": 1250.0, "currency": "UAH"},
        "period": {"start": "2026-01-31", "label": "31.01.2026", "number": 3, "every": "monthly"},
        "invoice": {"title": "Water supply 2026: 31.01.2026", "amount": 1250.0, "currency": "UAH", "due_date": "2026-02-10"},
        "previous_invoice": {"key": "bitrix24:invoice:17", "id": "17", "title": "Water supply 2026: 31.12.2025", "amount": 1250.0,
                             "currency": "UAH", "due_date": "2026-01-10"},
    },
    "invoice_sync": {
        "invoice": synced_invoice_var(key="bitrix24:invoice:17", title="Invoice #17", number="INV-00017", amount=1250.5,
                                      currency="UAH", stage="DT31_1:S"),
        "document": paid_by_var(key="onec:document:4a1c", kind="payment", number="ПН-000123", when=_SAMPLE_NOW.date(),
                                amount=1250.5, currency="UAH", method="number"),
        "deal": deal_var(key="bitrix24:deal:5", title="Order #5", stage="EXECUTING", to="WON"),
    },
    "order_status": {
        "order": order_var(key="onec:document:4a1c", kind="order", number="КП-0000123", when=_SAMPLE_NOW.date(), amount=1250.5,
                           currency="UAH", state="shipped", shipment_number="РН-000123"),
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
                self._conn.send((template, {**context, LANGUAGE: i18n.current()}))
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


@lru_cache(maxsize=4096)
def _compiled(template: str) -> tuple[Any, dict[str, Any]]:
    """The compiled template and its globals as a plain dict: jinja would otherwise merge its
    ChainMap of globals into every render's context, a third of a short text's cost."""
    t = _here.from_string(template)
    return t, dict(t.globals)


def _chunks(template: str, context: dict[str, Any]) -> Any:
    """``Template.generate`` with the globals merged once per template, not once per render."""
    t, globals_ = _compiled(template)
    try:
        # Context(parent=...) directly: Template.new_context would copy the globals' ChainMap twice
        yield from t.root_render_func(t.environment.context_class(t.environment, {**globals_, **context}, t.name, t.blocks))
    except Exception:  # noqa: BLE001 - jinja's own generate() does the same; it re-raises
        t.environment.handle_exception()  # re-raises with the template's line in the traceback


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template within the bounds; raises :class:`jinja2.TemplateError` on unknown
    variables, unsafe calls and bounds exceeded.

    In the main thread (every command, the daemon's cycles, a SIGHUP reload) the render runs here,
    stopped by a SIGALRM timer after :data:`RENDER_SECONDS` (thousands of texts a plan cost
    microseconds each, in the config's language); elsewhere it goes to the worker process."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return _worker.render(template, context)
    if _signal.getsignal(signal.SIGALRM) is not _stop:
        signal.signal(signal.SIGALRM, _stop)  # the connector has no other use for SIGALRM
    signal.setitimer(signal.ITIMER_REAL, RENDER_SECONDS)
    try:
        parts: list[str] = []
        size = 0
        for chunk in _chunks(template, {**context, LANGUAGE: i18n.current()}):
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


def template_names(rule: Any) -> set[str]:
    """Top-level variable names the templates of a rule read (``client``, ``last_contact``...)."""
    from jinja2 import meta

    names: set[str] = set()
    parts: list[tuple[tuple, Any]] = [((), rule.actions), ((), rule.escalate)]
    for attr in ("reassign", "channels", "offer", "on_clear"):
        if getattr(rule, attr, None) is not None:
            parts.append(((), getattr(rule, attr)))
    for base, obj in parts:
        for _loc, text in _texts(obj, base):
            try:
                names |= meta.find_undeclared_variables(_here.parse(text))
            except TemplateError:
                names.add("*")
    return names


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
        if rule.type == "recurring":
            parts += [(("rules", ri, "invoice"), rule.invoice), (("rules", ri, "unpaid_task"), rule.unpaid_task)]
        for base, obj in parts:
            for loc, text in _texts(obj, base):
                try:
                    render(text, ctx)
                except TemplateError as e:
                    problems.append((loc, f"template error: {e.message or e}"))
    return problems
