"""Write-back into 1C for companies that run on 1C alone: tasks, reassignment, comments.

Over OData a task (and a ``notify``) is a new object of the preset's task type
(``Task_ЗадачаИсполнителя`` in УТ 11, ``Document_Событие`` in УНФ / УТП), created unposted with
``action.marker`` in its text; a reassignment PATCHes the manager field (the partner's
``ОсновнойМенеджер_Key`` in УТ 11, the counterparty's own field elsewhere); a comment is appended
to the counterparty's ``Комментарий``. Over SOAP the same goes through ``CreateTask`` /
``SetResponsible`` of the reference service.

Exactly-once support, since 1C has neither idempotency keys nor optimistic locking (reference §5):

* creates look for the marker first (``substringof('<marker>', <text>)`` or ``FindTaskByMarker``)
  and again after an ambiguous failure, so a retry never doubles a task;
* every PATCH is read-modify-write guarded by ``DataVersion``: read, decide, re-read the version,
  PATCH only if it did not move, then check the response (1C silently ignores what it does not
  know and truncates long strings);
* a reassignment refuses to overwrite a manager that someone changed in 1C since planning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.config import OneC
from connector.domain import split_key
from connector.errors import NotFound, Rejected, TransientError
from connector.ports import ActionResult, Context, OneByOneSink, PlannedAction
from onec.client import SYSTEM, ODataClient, lit_dt, lit_str
from onec.mapping import ref, to_wall
from onec.metadata import MetadataCache, interest, resolve_against
from onec.presets import Names, for_config

FIND_WINDOW = timedelta(days=45)  # tasks are looked up by marker among those dated this recently



def _reassign_args(action: PlannedAction) -> tuple[str, str | None, list[str]]:
    """New manager, previous manager (or None) and the counterparties a reassign moves."""
    p = action.payload
    to = _user(p.get("to"), "reassign.to")
    previous = _user(p["from"], "reassign.from") if p.get("from") else None
    targets = _counterparties(p.get("entities"))
    if not targets:
        raise Rejected("nothing to reassign in 1C", system=SYSTEM)
    return to, previous, targets

def _user(key: Any, what: str) -> str:
    """A manager key of this system -> the 1C user GUID."""
    try:
        system, kind, source_id = split_key(str(key))
    except ValueError:
        raise Rejected(f"{what}: {key!r} is not a manager key", system=SYSTEM) from None
    if system != SYSTEM or kind != "user" or not ref(source_id):
        raise Rejected(f"{what}: {key} is not a 1C user", system=SYSTEM)
    return ref(source_id) or ""


def _counterparties(keys: Any) -> list[str]:
    out = []
    for k in keys or []:
        try:
            system, kind, source_id = split_key(str(k))
        except ValueError:
            continue
        if system == SYSTEM and kind == "counterparty" and ref(source_id):
            out.append(ref(source_id) or "")
    return out


def _deadline(value: Any, tz: ZoneInfo, now: datetime) -> datetime:
    try:
        dt = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        dt = now
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return to_wall(dt, tz)


def _with_marker(text: str, marker: str) -> str:
    return text if marker in text else f"{text.rstrip()}\n\n[{marker}]".lstrip()


class ODataSink(OneByOneSink):
    system = SYSTEM

    def __init__(self, cfg: OneC, ctx: Context, *, timezone: str = "Europe/Kyiv", client: ODataClient | None = None):
        assert cfg.odata is not None
        self.ctx = ctx
        self.names: Names = for_config(cfg)
        self.tz = ZoneInfo(timezone)
        self.client = client or ODataClient(cfg.odata.url, cfg.odata.user, cfg.odata.password, ctx.counter(SYSTEM),
                                            timeout=cfg.odata.timeout, page_size=cfg.odata.page_size)
        # what the source last learnt from $metadata (no request here): an unpublished task object
        # or a missing manager field makes the action unsupported instead of failing at the call
        cache = MetadataCache(self.client.root, interest(self.names), self.client.metadata,
                              every=timedelta(hours=cfg.metadata_every_hours), kv_get=ctx.kv_get, kv_set=ctx.kv_set)
        if ctx.kv_get is not None:
            schema = cache.cached(ctx.clock.now())
            if schema is not None:
                self.names = resolve_against(self.names, schema).names

    def supports(self, action_type: str) -> bool:
        n = self.names
        if action_type in ("task", "notify"):
            return bool(n.obj("task") and n.f("task.text") and n.f("task.responsible"))
        if action_type == "reassign":
            return bool(n.f("partner.manager") if n.obj("partners") else n.f("counterparty.manager"))
        if action_type == "comment":
            return bool(n.f("counterparty.comment"))
        return False

    # -- execute

    def execute(self, action: PlannedAction) -> ActionResult:
        if action.type in ("task", "notify"):
            return self._task(action)
        if action.type == "reassign":
            return self._reassign(action)
        if action.type == "comment":
            return self._comment(action)
        raise Rejected(f"action type {action.type} is not supported by 1C", system=SYSTEM)

    def _task_body(self, action: PlannedAction) -> dict:
        n, p = self.names, action.payload
        now = to_wall(self.ctx.clock.now(), self.tz)
        if action.type == "notify":
            text = str(p.get("text") or "")
            title = (text.strip().splitlines() or ["Notification"])[0][:100]
            responsible, deadline, subject = _user(p.get("user"), "notify.user"), now, None
        else:
            text = str(p.get("description") or "")
            title = str(p.get("title") or "").strip() or "Follow up"
            responsible = _user(p.get("responsible"), "task.responsible")
            deadline = _deadline(p.get("deadline"), self.tz, self.ctx.clock.now())
            found = _counterparties(p.get("bindings"))
            subject = found[0] if found else None
        body: dict[str, Any] = {"Date": f"{now:%Y-%m-%dT%H:%M:%S}", n.f("task.text"): _with_marker(text, action.marker),
                                n.f("task.responsible"): responsible}
        if n.f("task.title"):
            body[n.f("task.title")] = title[:150]
        if n.f("task.deadline"):
            body[n.f("task.deadline")] = f"{deadline:%Y-%m-%dT%H:%M:%S}"
        sf = n.f("task.subject")
        if subject and sf:
            body[sf] = subject
            if not sf.endswith("_Key"):
                body[f"{sf}_Type"] = f"StandardODATA.{n.obj('counterparties')}"
        return body

    def _find_task(self, marker: str) -> str | None:
        n = self.names
        obj, text = n.obj("task"), n.f("task.text")
        since = to_wall(self.ctx.clock.now() - FIND_WINDOW, self.tz)
        flt = f"Date ge {lit_dt(since)} and substringof({lit_str(marker)}, {text})"
        for page in self.client.pages(obj, select=["Ref_Key", text], filter=flt):
            for r in page:
                if marker in str(r.get(text) or ""):
                    return ref(r.get("Ref_Key")) or str(r.get("Ref_Key"))
        return None

    def _task(self, action: PlannedAction) -> ActionResult:
        obj = self.names.obj("task")
        body = self._task_body(action)
        existing = self._find_task(action.marker)
        if existing:
            return ActionResult(remote_id=existing, detail=f"{obj} already exists (found by marker)")
        try:
            row = self.client.create(obj, body)
        except TransientError:
            found = self._find_task(action.marker)
            if found:
                return ActionResult(remote_id=found, detail=f"{obj} created (confirmed by marker after an error)")
            raise
        guid = ref((row or {}).get("Ref_Key"))
        if not guid or action.marker not in str(row.get(self.names.f("task.text")) or ""):
            raise Rejected("1C did not keep the marker in the task text (field missing or truncated?); "
                           "the task may exist without a way to reconcile it", system=SYSTEM, obj=obj)
        return ActionResult(remote_id=guid, detail=f"{obj} created")

    def _holder(self, counterparty: str) -> tuple[str, str, str]:
        """Where a counterparty's responsible manager lives: ``(object, ref, field)``."""
        n = self.names
        if n.obj("partners"):
            cp = self.client.one(n.obj("counterparties"), counterparty, select=["Ref_Key", n.f("counterparty.partner")])
            partner = ref(cp.get(n.f("counterparty.partner")))
            if not partner:
                raise Rejected("the counterparty has no partner to carry its manager", system=SYSTEM,
                               obj=n.obj("counterparties"))
            return n.obj("partners"), partner, n.f("partner.manager")
        return n.obj("counterparties"), counterparty, n.f("counterparty.manager")

    def _guarded(self, obj: str, guid: str, fields: list[str], decide: Callable[[Mapping[str, Any]], dict | None]) -> bool:
        """Read-modify-write without 1C's help: PATCH only if ``DataVersion`` did not move since the
        read, then check the response. Returns whether anything was written."""
        for _ in range(3):
            row = self.client.one(obj, guid, select=["Ref_Key", "DataVersion", *fields])
            body = decide(row)
            if body is None:
                return False
            again = self.client.one(obj, guid, select=["DataVersion"])
            if again.get("DataVersion") != row.get("DataVersion"):
                continue  # somebody wrote in between: decide again on fresh data
            result = self.client.patch(obj, guid, body)
            wrong = [k for k, v in body.items() if str((result or {}).get(k)) != str(v)]
            if wrong:
                raise Rejected(f"1C did not apply {', '.join(wrong)} (unknown field or truncated value?)", system=SYSTEM, obj=obj)
            return True
        raise TransientError("the record kept changing while we tried to update it", system=SYSTEM, obj=obj)

    def _reassign(self, action: PlannedAction) -> ActionResult:
        to, previous, targets = _reassign_args(action)
        moved, already, missing = [], [], []
        for cp in targets:
            try:
                obj, holder, field = self._holder(cp)

                def decide(row: Mapping[str, Any], field: str = field, obj: str = obj) -> dict | None:
                    current = ref(row.get(field))
                    if current == to:
                        return None
                    if previous and current not in (previous, None):
                        raise Rejected(f"the manager was changed in 1C since planning (now {current}); not overwritten",
                                       system=SYSTEM, obj=obj)
                    return {field: to}

                (moved if self._guarded(obj, holder, [field], decide) else already).append(cp)
            except NotFound:
                missing.append(cp)
        if not moved and not already:
            raise Rejected("none of the counterparties exists any more", system=SYSTEM, obj=self.names.obj("counterparties"))
        detail = f"moved {len(moved)}" + (f", already {len(already)}" if already else "") + (f", missing {len(missing)}" if missing else "")
        return ActionResult(remote_id=targets[0], detail=detail)

    def _comment(self, action: PlannedAction) -> ActionResult:
        n = self.names
        p = action.payload
        targets = _counterparties([p.get("entity")])
        if not targets:
            raise Rejected("a 1C comment needs a counterparty", system=SYSTEM)
        obj, field = n.obj("counterparties"), n.f("counterparty.comment")
        stamp = f"{to_wall(self.ctx.clock.now(), self.tz):%d.%m.%Y %H:%M}"
        line = f"{stamp} {_with_marker(str(p.get('text') or ''), action.marker).strip()}"

        def decide(row: Mapping[str, Any]) -> dict | None:
            old = str(row.get(field) or "")
            if action.marker in old:
                return None
            return {field: f"{old.rstrip()}\n{line}" if old.strip() else line}

        wrote = self._guarded(obj, targets[0], [field], decide)
        return ActionResult(remote_id=targets[0], detail="comment appended" if wrote else "comment already there")

    # -- reconcile

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        n = self.names
        if action.type in ("task", "notify"):
            found = self._find_task(action.marker)
            return ActionResult(remote_id=found, detail="found by marker") if found else None
        if action.type == "reassign":
            to = _user(action.payload.get("to"), "reassign.to")
            targets = _counterparties(action.payload.get("entities"))
            for cp in targets:
                try:
                    obj, holder, field = self._holder(cp)
                    row = self.client.one(obj, holder, select=["Ref_Key", field])
                except NotFound:
                    continue
                if ref(row.get(field)) != to:
                    return None
            return ActionResult(remote_id=targets[0] if targets else None, detail="manager already set")
        if action.type == "comment":
            targets = _counterparties([action.payload.get("entity")])
            if not targets:
                return None
            row = self.client.one(n.obj("counterparties"), targets[0], select=["Ref_Key", n.f("counterparty.comment")])
            if action.marker in str(row.get(n.f("counterparty.comment")) or ""):
                return ActionResult(remote_id=targets[0], detail="comment found by marker")
            return None
        return None


class SoapSink(OneByOneSink):
    """The same actions through the reference web service (``CreateTask``, ``SetResponsible``)."""

    system = SYSTEM

    def __init__(self, cfg: OneC, ctx: Context, *, timezone: str = "Europe/Kyiv", client: Any = None):
        from onec.soap import SoapClient

        assert cfg.soap is not None
        self.ctx = ctx
        self.tz = ZoneInfo(timezone)
        self.client = client or SoapClient(cfg.soap, ctx.counter(SYSTEM))

    def supports(self, action_type: str) -> bool:
        return action_type in ("task", "notify", "reassign")

    def execute(self, action: PlannedAction) -> ActionResult:
        if action.type in ("task", "notify"):
            return self._task(action)
        if action.type == "reassign":
            to, previous, targets = _reassign_args(action)
            missing = []
            for cp in targets:
                try:
                    self.client.set_responsible(cp, to, previous)
                except NotFound:
                    missing.append(cp)
            if len(missing) == len(targets):
                raise Rejected("none of the counterparties exists any more", system=SYSTEM, obj="ws SetResponsible")
            return ActionResult(remote_id=targets[0], detail=f"moved {len(targets) - len(missing)}")
        raise Rejected(f"action type {action.type} is not supported by the 1C web service", system=SYSTEM)

    def _task(self, action: PlannedAction) -> ActionResult:
        p = action.payload
        now = self.ctx.clock.now()
        existing = self.client.find_task(action.marker)
        if existing:
            return ActionResult(remote_id=existing, detail="task already exists (found by marker)")
        if action.type == "notify":
            text = str(p.get("text") or "")
            args = dict(counterparty=None, responsible=_user(p.get("user"), "notify.user"),
                        title=(text.strip().splitlines() or ["Notification"])[0][:100], description=_with_marker(text, action.marker),
                        deadline=to_wall(now, self.tz), marker=action.marker)
        else:
            found = _counterparties(p.get("bindings"))
            args = dict(counterparty=found[0] if found else None, responsible=_user(p.get("responsible"), "task.responsible"),
                        title=str(p.get("title") or "").strip() or "Follow up",
                        description=_with_marker(str(p.get("description") or ""), action.marker),
                        deadline=_deadline(p.get("deadline"), self.tz, now), marker=action.marker)
        try:
            remote = self.client.create_task(**args)
        except TransientError:
            found_ref = self.client.find_task(action.marker)
            if found_ref:
                return ActionResult(remote_id=found_ref, detail="task created (confirmed by marker after an error)")
            raise
        return ActionResult(remote_id=remote, detail="task created")

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        if action.type in ("task", "notify"):
            found = self.client.find_task(action.marker)
            return ActionResult(remote_id=found, detail="found by marker") if found else None
        if action.type == "reassign":
            to = _user(action.payload.get("to"), "reassign.to")
            targets = _counterparties(action.payload.get("entities"))
            for cp in targets:
                try:
                    row = self.client.counterparty(cp)
                except NotFound:
                    continue
                if row and ref(row.get("ManagerRef")) != to:
                    return None
            return ActionResult(remote_id=targets[0] if targets else None, detail="manager already set")
        return None

