"""From findings to planned actions: keys, texts, people, deadlines, escalation, safety brake.

Keys are ``rule:subject:period:index`` (escalation steps ``...:e<step>.<index>``), so a rerun
plans the very same keys and the journal turns them into no-ops. The safety brake refuses a rule
that would act on more than ``safety.max_share`` of its scope (a failed or half-empty source
makes everyone look forgotten), and a run with more than ``safety.max_actions_per_run`` new
actions, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jinja2 import TemplateError

from connector.calendar import BusinessCalendar
from connector.config import (
    DEFAULT_CONTACT,
    CommentAction,
    EmailAction,
    FieldAction,
    NotifyAction,
    NotifySpec,
    Reassign,
    ReleaseRule,
    Settings,
    SmsAction,
    TaskAction,
    TriggerAction,
    WorkflowAction,
    WorkflowSpec,
)
from connector.i18n import _, ngettext
from connector.journal import Journal
from connector.ports import PlannedAction
from connector.rules import clear_reason, evaluate
from connector.rules.base import DONE_STATES, FINAL_STATES, Finding, Lazy, episode_of, person_key
from connector.snapshot import ClientView, EpisodeView, ManagerView, Snapshot, family_of, split_episode
from connector.templates import (
    client_var,
    day_var,
    last_contact_var,
    moment_var,
    person_var,
    pick_variant,
    render,
    rule_var,
)

# the release comment as the config's default: written in the config's language (a comment set in the config is used as written)
RELEASE_COMMENT = Reassign.model_fields["comment"].default


@dataclass
class RulePlan:
    rule: str
    type: str
    scope: int
    findings: int
    actions: list[PlannedAction] = field(default_factory=list)
    refused: str | None = None  # why the safety brake refused the rule's new actions
    errors: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # what the rule could not do (an empty pool), with names
    notes: list[str] = field(default_factory=list)  # deliberate skips worth showing
    evaluation: Any = field(default=None, repr=False)  # the rule's Evaluation (findings, holding): what `explain` reads


@dataclass
class Cleared:
    """An episode whose condition cleared: it is closed with its reason when the plan is recorded."""

    episode: str  # the family (a lost client's call-backs share one)
    rule: str
    subject_key: str
    client_key: str | None
    reason: str


@dataclass
class Plan:
    rules: list[RulePlan]
    known: dict[str, str]  # action key -> journal state, for actions already in the journal
    refused_run: str | None = None
    cancel: list[tuple[str, str]] = field(default_factory=list)  # (pending journal key, why it is cancelled)
    cleared: list[Cleared] = field(default_factory=list)

    @property
    def refusals(self) -> list[str]:
        """Everything refused, by rule, for the run's output and exit code (3)."""
        out = [f"{r.rule}: {r.refused}" for r in self.rules if r.refused]
        out += [f"{r.rule}: {x}" for r in self.rules for x in r.refusals]
        if self.refused_run:
            out.append(self.refused_run)
        return out

    @property
    def actions(self) -> list[PlannedAction]:
        return [a for r in self.rules if not r.refused for a in r.actions]

    @property
    def new_actions(self) -> list[PlannedAction]:
        if self.refused_run:
            return []
        return [a for a in self.actions if a.key not in self.known]


def _client_vars(c: ClientView | None, fallback_title: str = "") -> dict[str, Any]:
    """``client``: reads as its title; an unknown caller as the phone number, greeted as "dear client"."""
    if c is None:
        return client_var(title=fallback_title, phone=fallback_title)
    return client_var(key=c.key, title=c.title, first_name=c.first_name, phone=c.phones[0] if c.phones else "",
                      email=c.emails[0] if c.emails else "", segment=c.segment or "", tax_id=c.tax_id or "", kind=c.kind,
                      fields=c.fields, system=c.system)


def _person_vars(m: ManagerView | None, key: str | None) -> dict[str, Any]:
    """``manager`` and the like: reads as the name ("your manager" when unknown)."""
    if m is None:
        return person_var(key, None)
    return person_var(m.key, m.name, m.email)


class Planner:
    """Turns findings into planned actions; reads the journal by key, never whole."""

    def __init__(self, settings: Settings, snap: Snapshot, cal: BusinessCalendar, *, journal: Journal | None = None,
                 known: dict[str, str] | None = None):
        self.settings = settings
        self.snap = snap
        self.cal = cal
        self.journal = journal
        self._known_fixed = known
        self.known: dict[str, str] = dict(known or {})
        self._marketing_this_run: dict[str, str] = {}  # client key -> the marketing message key planned now
        self._fixed: dict[str, dict] = {}
        self._people_vars: dict[str | None, Any] = {}
        self._read_names: dict[str, set[str]] = {}
        self._messages: dict[str, list] = {}
        self._unread: list[str] = []  # clients of the current rule whose messages are not read yet
        self._episodes_read: set[str] = set()  # every journal entry of these episodes is in self.known
        sup = settings.people.supervisor
        self.supervisor_key = person_key(snap, sup) if sup is not None else None

    # -- public

    def plan(self, *, force: bool = False, only: set[str] | None = None) -> Plan:
        rule_plans: list[RulePlan] = []
        cleared: list[Cleared] = []
        for rule in self.settings.all_rules():
            if not rule.enabled or (only and rule.name not in only):
                continue
            ev = evaluate(rule, self.snap, self.cal, self.settings)
            rp = RulePlan(rule.name, rule.type, ev.scope, len(ev.findings), refusals=list(ev.refusals), notes=list(ev.notes),
                          evaluation=ev)
            # the clients' earlier messages are read when a message is planned (caps, variants), not for every rule
            self._unread = [f.client.key for f in ev.findings if f.client is not None]
            asked = [episode_of(rule.name, f.subject_key, f.period) for f in ev.findings]
            episodes = self.snap.episode_entries(asked)
            self._episodes_read.update(asked)
            self.known.update({e.key: e.state for es in episodes.values() for e in es})
            for f in ev.findings:
                try:
                    rp.actions.extend(self._expand(rule, f, episodes))
                except TemplateError as e:  # validated at load time; data can still surprise
                    rp.errors.append(_("{subject}: template error: {error}").format(subject=f.subject_key, error=e))
            current = {family_of(episode_of(rule.name, f.subject_key, f.period)) for f in ev.findings} | ev.holding
            for ep in self.snap.open_episodes(rule.name):
                if ep.episode in current:
                    continue
                why = clear_reason(rule, ep, self.snap, self.cal)
                if why is not None:
                    cleared.append(Cleared(ep.episode, rule.name, ep.subject_key, ep.client_key, why))
                    rp.actions.extend(self._on_clear(rule, ep, why))
            rule_plans.append(rp)
        self._learn_known([a.key for r in rule_plans for a in r.actions])
        for rp, rule in zip(rule_plans, [r for r in self.settings.all_rules() if r.enabled and (not only or r.name in only)], strict=True):
            self._brake(rule, rp, force)
        plan = Plan(rule_plans, {a.key: self.known[a.key] for r in rule_plans for a in r.actions if a.key in self.known}, cleared=cleared)
        new = plan.new_actions
        limit = self.settings.safety.max_actions_per_run
        if not force and len(new) > limit:
            plan.refused_run = _(
                "{n} new actions exceed safety.max_actions_per_run={limit}; nothing new will be executed "
                "(check the sources, raise the limit, or rerun with --force)"
            ).format(n=len(new), limit=limit)
        # pending steps of episodes that ended are cancelled; a step the rule no longer plans for an
        # episode that still holds (the config changed) too; absence that proves nothing cancels nothing
        planned_keys = {a.key for a in plan.actions}
        ended = {c.episode for c in cleared}
        for rp in rule_plans:
            if rp.refused:
                continue
            live = {family_of(a.key.rsplit(":", 1)[0]) for a in rp.actions}
            for key, episode in self.snap.pending_keys(rp.rule):
                fam = family_of(episode)
                if key in planned_keys:
                    continue
                if fam in ended:
                    plan.cancel.append((key, next(c.reason for c in cleared if c.episode == fam)))
                elif fam in live:
                    plan.cancel.append((key, _("no longer planned for this episode (the rule changed)")))
        return plan

    def _learn_known(self, keys: list[str]) -> None:
        """The journal state of ``keys``; a key of an episode whose entries were all read is known already
        (in the journal with its state, or not in it at all), so the day after a run asks for nothing again."""
        if self.journal is not None:
            self.known.update(self.journal.states_for([k for k in keys if k not in self.known
                                                       and k.rsplit(":", 1)[0] not in self._episodes_read]))

    def _messages_of(self, client_key: str) -> list:
        if self._unread:
            self._messages.update(self.snap.messages_of([c for c in self._unread if c not in self._messages]))
            self._unread = []
        return self._messages.get(client_key, [])

    # -- safety

    def _brake(self, rule: Any, rp: RulePlan, force: bool) -> None:
        s = self.settings.safety
        new_subjects = {a.subject_key for a in rp.actions if a.key not in self.known and not _is_closing(a.key)}
        if force or rp.scope < s.min_clients_for_share or not new_subjects or rule.type == "greetings":  # greeting everyone is the point
            return
        share = len(new_subjects) / max(rp.scope, 1)
        if share > s.max_share:
            rp.refused = _(
                "rule {rule} would act on {n} of {scope} subjects ({share}), more than safety.max_share {max_share}; "
                "refused (a source may be incomplete). Use --force if this is real."
            ).format(rule=repr(rule.name), n=len(new_subjects), scope=rp.scope, share=f"{share:.0%}", max_share=f"{s.max_share:.0%}")

    # -- expansion

    def _context(self, rule: Any, f: Finding, *, every: bool = False) -> dict:
        """The template variables of one finding. What is the same for every finding (the
        supervisor, now, the rule) or for every finding of one manager is built once; what none of
        the rule's templates reads (``last_contact``) is not built at all."""
        c = f.client
        responsible = f.responsible_key or (c.responsible_key if c else None)
        fixed = self._fixed.get(rule.name)
        if fixed is None:
            fixed = self._fixed[rule.name] = {
                "supervisor": _person_vars(self.snap.manager(self.supervisor_key), self.supervisor_key),
                "rule": rule_var(rule.name, rule.type),
                "now": moment_var(self.cal.local(self.snap.now)),
                "today": day_var(self.cal.today(self.snap.now)),
                "days": 0,
            }
        ctx = {**fixed, "client": _client_vars(c, f.phone or ""), "manager": self._person(f.reassign_to or responsible),
               "reason": f.reason}
        if every or "last_contact" in self._reads(rule):
            ctx["last_contact"] = _last_contact(c, self.cal)
        reads = self._reads(rule)
        for name, value in f.vars.items():
            if isinstance(value, Lazy):
                if not (every or name in reads or "*" in reads):
                    continue
                value = value.make()
            ctx[name] = value
        if isinstance(rule, ReleaseRule):
            ctx["previous_manager"] = self._person(f.previous_key)
        return ctx

    def _person(self, key: str | None) -> Any:
        if key not in self._people_vars:
            self._people_vars[key] = _person_vars(self.snap.manager(key), key)
        return self._people_vars[key]

    def _reads(self, rule: Any) -> set[str]:
        """The variable names the rule's templates use (every text of its actions, steps, closing)."""
        names = self._read_names.get(rule.name)
        if names is None:
            from connector.templates import template_names

            names = self._read_names[rule.name] = template_names(rule)
        return names

    def _expand(self, rule: Any, f: Finding, episodes: dict[str, list]) -> list[PlannedAction]:
        episode = episode_of(rule.name, f.subject_key, f.period)
        c = f.client
        responsible = f.responsible_key or (c.responsible_key if c else None)
        ctx = self._context(rule, f)
        out: list[PlannedAction] = []
        after: list[str] = []
        if isinstance(rule, ReleaseRule) and c is not None and f.reassign_to:
            entities = [c.key]
            if rule.reassign.move_deals:
                entities += c.deal_keys
            if rule.reassign.move_contacts:
                entities += c.contact_keys
            r = self._action(rule, f, f"{episode}:r", "reassign", c.system,
                             {"entities": entities, "to": f.reassign_to, "from": f.previous_key,
                              "to_name": ctx["manager"]["name"], "from_name": ctx["previous_manager"]["name"]}, ctx)
            out.append(r)
            after = [r.key]  # the comment and messages about a reassignment wait for it, and are dropped if it fails
            if rule.reassign.comment:
                text = render(rule.reassign.comment, ctx) if rule.reassign.comment != RELEASE_COMMENT else ngettext(
                    "Client released from {previous} to {manager}: no contact for {days} day.",
                    "Client released from {previous} to {manager}: no contact for {days} days.", ctx["days"]).format(
                    previous=ctx["previous_manager"]["name"], manager=ctx["manager"]["name"], days=ctx["days"])
                out.append(self._action(rule, f, f"{episode}:rc", "comment", c.system, {"entity": c.key, "text": text}, ctx))
        for b in f.builtin:  # what the rule makes itself (an rfm field write, a recurring invoice)
            key = f"{episode}:{b.suffix}"
            if b.action is not None:
                made = self._render(rule, f, key, b.action, ctx, responsible)
            else:
                payload = {k: (render(v, ctx) if k in b.render and isinstance(v, str) else v) for k, v in b.payload.items()}
                made = [self._action(rule, f, key, b.type, b.system or self._crm_system(f), payload, ctx)]
            for a in made:
                a.depends_on = list(b.after) or a.depends_on
                a.reason = b.reason or a.reason
            out.extend(made)
            if b.first:
                after += [a.key for a in made]
        for i, a in enumerate((f.actions if f.actions is not None else rule.actions) if f.configured else []):
            out.extend(self._render(rule, f, f"{episode}:{i}", a, ctx, responsible))
        # escalation ladder: after N days counted from the episode's first action, or when its task is overdue
        if rule.escalate:
            entries = episodes.get(episode, [])
            done = [e for e in entries if e.state in DONE_STATES and e.done_at and not _is_step(e.key)]
            first = min((e.done_at for e in done), default=None)
            tasks = [e.remote_key for e in done if e.type == "task" and e.remote_key]
            open_tasks = self.snap.open_tasks(tasks) if tasks and any(s.when == "task_overdue" for s in rule.escalate) else {}
            overdue = [k for k, t in open_tasks.items() if t["deadline"] is not None and t["deadline"] < self.snap.now]
            for s, step in enumerate(rule.escalate):
                due = (step.after_days is not None and first is not None and self.snap.now >= first + timedelta(days=step.after_days)) or (
                    step.when == "task_overdue" and bool(overdue))
                if due:
                    for j, a in enumerate(step.actions):
                        out.extend(self._render(rule, f, f"{episode}:e{s}.{j}", a, ctx, responsible))
        for a in out:
            if after and a.key not in after:
                a.depends_on = list(after)
        return out

    def _on_clear(self, rule: Any, ep: EpisodeView, why: str) -> list[PlannedAction]:
        """The episode ended: complete the connector's open tasks of it, reset the labels it set."""
        spec = rule.on_clear
        out: list[PlannedAction] = []
        c = self.snap.client(ep.client_key)
        f = Finding(subject_key=ep.subject_key, client=c, period=split_episode(ep.episode)[2],
                    reason=_("episode ended: {reason}").format(reason=why))
        ctx = self._context(rule, f) if c is not None else {"client": _client_vars(None, ep.subject_key), "manager": _person_vars(None, None)}
        if spec.close_tasks:
            entries = self.snap.family_entries([ep.episode]).get(ep.episode, [])
            tasks = sorted({e.remote_key for e in entries if e.type == "task" and e.state in DONE_STATES and e.remote_key})
            still_open = self.snap.open_tasks(tasks)
            for n, task in enumerate(tasks):
                if task in still_open:
                    text = _("Closed automatically: {reason}.").format(reason=why)
                    out.append(self._action(rule, f, f"{ep.episode}:x{n}", "close_task", task.split(":", 1)[0],
                                            {"task": task, "text": text}, ctx))
        if spec.field and c is not None:
            values = {k: (render(v, ctx) if isinstance(v, str) else v) for k, v in spec.field.items()}
            out.append(self._action(rule, f, f"{ep.episode}:xf", "field", c.system, {"entity": c.key, "fields": values}, ctx))
        return out

    def _people(self, refs: list, f: Finding, responsible: str | None) -> list[str]:
        keys = []
        for p in refs:
            if p == "responsible":
                k = f.reassign_to or responsible
            elif p == "previous_responsible":
                k = f.previous_key
            elif p == "supervisor":
                k = self.supervisor_key
            elif p == "duty_manager":
                duty = self.settings.people.duty_manager
                k = person_key(self.snap, duty) if duty is not None else self.supervisor_key
            else:
                k = person_key(self.snap, p)
            if k and k not in keys:
                keys.append(k)
        return keys

    def _crm_system(self, f: Finding) -> str:
        return f.client.system if f.client else self.snap.primary

    def _render(self, rule: Any, f: Finding, key: str, a: Any, ctx: dict, responsible: str | None) -> list[PlannedAction]:
        c = f.client
        system = self._crm_system(f)
        entity = c.key if c else None
        if isinstance(a, TaskAction):
            spec = a.task
            who = self._people([spec.responsible], f, responsible)
            title = render(spec.title, ctx)
            desc = render(spec.description, ctx) if spec.description else f.reason
            bindings = [entity] if entity else []
            if spec.bind_to == "deal" and c and c.deal_keys:
                bindings = [c.deal_keys[0]]
            return [self._action(rule, f, key, "task", system, {
                "title": title, "description": desc, "responsible": who[0] if who else None,
                "deadline": (f.deadline or self.cal.deadline(self.snap.now, spec.deadline)).isoformat(), "bindings": bindings}, ctx)]
        if isinstance(a, FieldAction):
            if not entity:
                return []
            values = {k: (render(v, ctx) if isinstance(v, str) else v) for k, v in a.field.items()}
            return [self._action(rule, f, key, "field", system, {"entity": entity, "fields": values}, ctx)]
        if isinstance(a, CommentAction):
            if not entity:
                return []
            return [self._action(rule, f, key, "comment", system, {"entity": entity, "text": render(a.comment, ctx)}, ctx)]
        if isinstance(a, NotifyAction):
            refs = a.notify.to if isinstance(a.notify, NotifySpec) else a.notify
            text = render(a.notify.text, ctx) if isinstance(a.notify, NotifySpec) and a.notify.text else (
                _("[{rule}] {client}: {reason}").format(rule=rule.name, client=ctx["client"]["title"], reason=f.reason))
            return [
                self._action(rule, f, f"{key}.{n}", "notify", system, {"user": who, "user_name": _person_vars(self.snap.manager(who), who)["name"], "text": text}, ctx)
                for n, who in enumerate(self._people(refs, f, responsible))
            ]
        if isinstance(a, TriggerAction):
            if not entity:
                return []
            # the subject (an invoice) and the open deals too: an application's trigger fires on documents with automation
            return [self._action(rule, f, key, "trigger", system, {"entity": entity, "code": a.trigger, "subject": f.subject_key,
                                                                   "deals": list(c.deal_keys[:1]) if c else []}, ctx)]
        if isinstance(a, WorkflowAction):
            if not entity:
                return []
            spec = a.workflow if isinstance(a.workflow, WorkflowSpec) else WorkflowSpec(template_id=a.workflow)
            params = {k: (render(v, ctx) if isinstance(v, str) else v) for k, v in spec.parameters.items()}
            return [self._action(rule, f, key, "workflow", system, {"entity": entity, "template_id": spec.template_id, "parameters": params}, ctx)]
        if isinstance(a, SmsAction):
            return self._sms(rule, f, key, a, ctx)
        if isinstance(a, EmailAction):
            return self._email(rule, f, key, a, ctx)
        raise ValueError(f"unknown action {a!r}")

    def _message_time(self):
        m = self.settings.messaging
        quiet = m.quiet_hours if m else "21:00-09:00"
        workdays_only = m.workdays_only if m else True
        return self.cal.next_allowed(self.snap.now, quiet, workdays_only)

    def _may_message(self, c: ClientView | None, key: str, marketing: bool) -> bool:
        """Opt-out field and the per-client cap on marketing messages (transactional ones pass)."""
        m = self.settings.messaging
        if c is None or m is None:
            return True
        field = m.opt_out_field or (self.settings.bitrix24.opt_out_field if self.settings.bitrix24 else None)
        if field and str(c.fields.get(field, "")).strip().lower() in ("y", "yes", "1", "true", "on"):
            return False
        if marketing and m.max_per_client_days:
            if key in self.known:
                return True  # already journaled: keep planning it, the journal makes it a no-op
            if self._marketing_this_run.setdefault(c.key, key) != key:
                return False
            since = self.snap.now - timedelta(days=m.max_per_client_days)
            for e in self._messages_of(c.key):
                when = e.done_at or e.created_at
                if (e.payload or {}).get("marketing") and e.state in DONE_STATES and when and when >= since:
                    return False
        return True

    def _variant(self, variants: list[str], rule: Any, f: Finding, key: str) -> str:
        """Rotate: a client never gets the same text twice in a row from one rule's action."""
        c = f.client
        who = c.key if c else f.subject_key
        index = key.rsplit(":", 1)[-1]
        before = [e for e in self._messages_of(who) if e.rule == rule.name and e.key.rsplit(":", 1)[-1] == index
                  and e.key != key and e.state in DONE_STATES]
        return pick_variant(variants, who, len(before))

    def _sms(self, rule: Any, f: Finding, key: str, a: SmsAction, ctx: dict) -> list[PlannedAction]:
        c = f.client
        if a.sms.to == "client" and not f.phone and not self._may_message(c, key, a.sms.marketing):
            return []
        phone = f.phone if (a.sms.to == "caller" or f.phone) else None
        if phone is None and c is not None:
            from connector.phones import is_mobile

            phone = next((p for p in c.phones if is_mobile(p)), c.phones[0] if c.phones else None)
        text = render(a.sms.text if a.sms.text else self._variant(a.sms.variants, rule, f, key), ctx)
        payload = {"phone": phone, "text": text, "client_key": c.key if c else None, "marketing": a.sms.marketing}
        m = self.settings.messaging
        when = f.send_at or self._message_time()
        not_before = when if when > self.snap.now else None
        if m and m.sms and m.sms.provider == "bitrix24":
            # No REST method sends an SMS: fire the portal's automation trigger whose robot sends it.
            entity = c.key if c else None
            if entity is None:
                return []
            act = self._action(rule, f, key, "trigger", self._crm_system(f), {"entity": entity, "code": m.sms.trigger_code, "sms": payload}, ctx)
        else:
            act = self._action(rule, f, key, "sms", "sms", payload, ctx)
        act.not_before = not_before
        return [act]

    def _email(self, rule: Any, f: Finding, key: str, a: EmailAction, ctx: dict) -> list[PlannedAction]:
        c = f.client
        if a.email.to == "client" and not self._may_message(c, key, False):
            return []
        if a.email.to == "client":
            to = c.emails[0] if c and c.emails else None
        else:
            who = self._people([{"responsible": "responsible", "supervisor": "supervisor"}[a.email.to]], f, f.responsible_key or (c.responsible_key if c else None))
            m = self.snap.manager(who[0]) if who else None
            to = m.email if m else None
        text = render(a.email.text if a.email.text else self._variant(a.email.variants, rule, f, key), ctx)
        act = self._action(rule, f, key, "email", "sms", {"to": to, "subject": render(a.email.subject, ctx), "text": text}, ctx)
        if a.email.to == "client":
            when = f.send_at or self._message_time()
            act.not_before = when if when > self.snap.now else None
        return [act]

    def _action(self, rule: Any, f: Finding, key: str, type_: str, system: str, payload: dict, ctx: dict) -> PlannedAction:
        act = PlannedAction(
            key=key, rule=rule.name, type=type_, system=system, subject_key=f.subject_key,
            client_key=f.client.key if f.client else None, payload=payload, reason=f.reason, mode=rule.mode,
            client_title=ctx["client"]["title"], manager_name=ctx["manager"]["name"],
        )
        marker = f"[{act.marker}]"
        if type_ == "task":
            payload["description"] = f"{payload['description']}\n\n{marker}"
        elif type_ == "comment":
            payload["text"] = f"{payload['text']} {marker}"
        return act


def _last_contact(c: ClientView | None, cal: BusinessCalendar) -> Any:
    """``last_contact`` for rules that do not compute their own: the client's latest contact of any kind."""
    last, kind = c.last_contact(DEFAULT_CONTACT) if c is not None else (None, None)
    return last_contact_var(kind, cal.local(last) if last else None)


def is_final(state: str) -> bool:
    return state in FINAL_STATES


def _is_step(key: str) -> bool:
    """An escalation step (``…:e0.1``) or an episode-closing action (``…:x0``, ``…:xf``)."""
    last = key.rsplit(":", 1)[-1]
    return last.startswith("e") or last.startswith("x")


def _is_closing(key: str) -> bool:
    return key.rsplit(":", 1)[-1].startswith("x")


def add_own_actions(plan: Plan, settings: Settings, snap: Snapshot, journal: Journal | None) -> None:
    """Append what adapters write because of synced data rather than a rule (``connector.ports.OwnActions``:
    the Bitrix24 application's calls on the client card), each as a rule plan of its own name."""
    from connector.ports import OwnActions
    from connector.registry import adapters

    for adapter in adapters().values():
        if not (isinstance(adapter, OwnActions) and adapter.configured(settings)):
            continue
        for name, actions in adapter.own_actions(settings, snap).items():
            rp = RulePlan(name, "own", len(actions), len(actions), list(actions))
            plan.rules.append(rp)
            if journal is not None and actions:
                plan.known.update(journal.states_for([a.key for a in actions]))

