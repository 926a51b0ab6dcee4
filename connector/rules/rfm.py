"""RFM: recency, frequency and monetary value of each client's purchases, as a score and a segment.

Purchases are the evidence module's, from every source (won deals, paid invoices, 1C sales and
paid orders), one per local day (a deal and the 1C sale of the same order count once). Recency
is the days since the last purchase ever; frequency the purchase days and monetary value the
money spent (in the base currency) within ``window_days``. Each is scored 1-5 by fixed
``thresholds``, or by quintile among the clients in scope who ever bought: a client's score is
``1 + floor(5 * (below + equal / 2) / n)`` where ``below``/``equal`` count the clients with a worse
/ the same value (the mid-rank percentile). Ties get one score, the order of rows never matters, so
the same purchases give the same segments on every run; with fewer than five clients the scores
spread over 1-5 the same way (one client alone scores 3). The first ``segments`` pattern that
matches the scores names the segment.

Only clients whose CRM fields differ from what is computed get a ``field`` action: the fields are
pulled with the clients and compared, so a cycle without purchases writes nothing. A write's key
is ``rfm:<client>:g<n>.<score>.<segment>:f``: a new value is a new generation ``n``, an unchanged
value plans the same key again (a no-op in the journal). Other rules read this cycle's segments
through ``where: {rfm: [...]}`` (:func:`segments_of`, :func:`segment_select`); the results are
computed once per snapshot.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.numbers import get_decimal_symbol, get_group_symbol
from sqlalchemy import Column, MetaData, String, Table, func, literal, select

from connector import i18n
from connector.calendar import BusinessCalendar
from connector.config import RfmRule
from connector.evidence import utc_offset_minutes
from connector.i18n import _
from connector.rules.base import Builtin, Evaluation, Finding, kind_of
from connector.snapshot import ClientView, EpisodeView, Snapshot, split_episode
from connector.store import client_phones, clients

_tmp = MetaData()
rfm_now = Table("rfm_now", _tmp, Column("client_key", String(200)), Column("segment", String(200)), prefixes=["TEMPORARY"])


@dataclass(slots=True)
class Scored:
    """One client in the rule's scope: what it bought and what the rule makes of it."""

    key: str
    recency_days: int | None  # None: never bought
    frequency: int
    monetary: float
    unpriced: int  # purchase days in the window whose currency has no rate
    current_score: str
    current_segment: str
    r: int = 0
    f: int = 0
    m: int = 0
    score: str = ""
    segment: str | None = None  # None: not labelled (never bought, and no_purchase_segment is null)

    @property
    def changed(self) -> bool:
        return self.segment is not None and (self.current_score, self.current_segment) != (self.score, self.segment)


@dataclass
class Result:
    """Every client in the rule's scope as columns (a first run has a hundred thousand of them);
    :meth:`get` gives one as a :class:`Scored`."""

    rule: RfmRule
    keys: list[str]
    days: list[int | None]
    frequency: list[int]
    monetary: list[float]
    unpriced_days: list[int]
    rfm: list[tuple[int, int, int]]
    score: list[str]
    segment: list[str | None]
    current: list[tuple[str, str]]
    unpriced: int
    _index: dict[str, int] | None = None
    _segments: dict[str, str] | None = None

    def _at(self, i: int) -> Scored:
        r, f, m = self.rfm[i]
        return Scored(self.keys[i], self.days[i], self.frequency[i], self.monetary[i], self.unpriced_days[i], self.current[i][0],
                      self.current[i][1], r, f, m, self.score[i], self.segment[i])

    def get(self, key: str) -> Scored | None:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        i = self._index.get(key)
        return self._at(i) if i is not None else None

    def changed(self) -> list[Scored]:
        """The clients whose CRM fields differ from what the rule computes."""
        return [self._at(i) for i, (seg, sc, cur) in enumerate(zip(self.segment, self.score, self.current, strict=True))
                if seg is not None and cur != (sc, seg)]

    @property
    def scored(self) -> dict[str, Scored]:
        return {k: self._at(i) for i, k in enumerate(self.keys)}

    def segments(self) -> dict[str, str]:
        """client key -> segment (made once: :func:`connector.rules.base.in_scope` asks per client)."""
        if self._segments is None:
            self._segments = {k: seg for k, seg in zip(self.keys, self.segment, strict=True) if seg is not None}
        return self._segments

    def counts(self) -> dict[str, int]:
        """Clients per segment, in the config's order of segments (then the others, then those never bought)."""
        c = Counter(seg for seg in self.segment if seg is not None)
        order = [s.name for s in self.rule.segments] + [self.rule.other_segment]
        if self.rule.no_purchase_segment:
            order.append(self.rule.no_purchase_segment)
        return {name: c[name] for name in dict.fromkeys(order) if c[name]}


# ---------------------------------------------------------------- scoring (pure)


def quintiles(values: list[float]) -> list[int]:
    """Scores 1-5 for ``values`` (higher is better) by mid-rank percentile: equal values get equal
    scores and the result depends on the values only, never on their order."""
    n = len(values)
    if n == 0:
        return []
    below: dict[float, int] = {}
    equal = Counter(values)
    seen = 0
    for v in sorted(equal):
        below[v] = seen
        seen += equal[v]
    return [min(5, (2 * below[v] + equal[v]) * 5 // (2 * n) + 1) for v in values]


def by_thresholds(value: float, cuts: list[float], *, lower_is_better: bool = False) -> int:
    """Four ascending cut points -> 1-5. Recency (days, ``lower_is_better``): at most the first
    scores 5 ... beyond the fourth 1; frequency and money: at least the fourth scores 5 ... below the first 1."""
    if lower_is_better:
        return next((5 - i for i, cut in enumerate(cuts) if value <= cut), 1)
    return 1 + sum(1 for cut in cuts if value >= cut)


def segment_for(rule: RfmRule, r: int, f: int, m: int) -> str:
    for s in rule.segments:
        if r in s.r and f in s.f and m in s.m:
            return s.name
    return rule.other_segment


def score(rule: RfmRule, days: list[int | None], frequency: list[int], monetary: list[float]
          ) -> tuple[list[tuple[int, int, int]], list[str], list[str | None]]:
    """Each client's ``(r, f, m)``, score and segment: quintiles among those who bought (or the
    thresholds); a client who never bought gets no score and ``no_purchase_segment``."""
    bought = [i for i, d in enumerate(days) if d is not None]
    t = rule.thresholds
    rs = ([by_thresholds(days[i] or 0, t.recency_days, lower_is_better=True) for i in bought]
          if t and t.recency_days else quintiles([-(days[i] or 0) for i in bought]))
    fs = ([by_thresholds(frequency[i], t.frequency) for i in bought] if t and t.frequency
          else quintiles([float(frequency[i]) for i in bought]))
    ms = ([by_thresholds(monetary[i], t.monetary) for i in bought] if t and t.monetary
          else quintiles([round(monetary[i], 2) for i in bought]))
    names = {(r, f, m): (f"R{r}F{f}M{m}", segment_for(rule, r, f, m)) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    rfm_: list[tuple[int, int, int]] = [(0, 0, 0)] * len(days)
    scores: list[str] = [""] * len(days)
    segments: list[str | None] = [rule.no_purchase_segment] * len(days)
    for i, r, f, m in zip(bought, rs, fs, ms, strict=True):
        rfm_[i] = (r, f, m)
        scores[i], segments[i] = names[(r, f, m)]
    return rfm_, scores, segments


# ---------------------------------------------------------------- the evaluation


def compute(rule: RfmRule, snap: Snapshot) -> Result:
    """Every client in the rule's scope, scored; once per snapshot."""
    cache: dict[str, Result] = snap.__dict__.setdefault("_rfm_results", {})
    if rule.name in cache:
        return cache[rule.name]
    if rule.where is not None and rule.where.rfm is not None:
        raise ValueError(f"rule {rule.name}: where.rfm cannot select the rfm rule's own clients")
    kind = kind_of(rule.clients)
    tz = ZoneInfo(snap.settings.timezone)
    today = snap.now.astimezone(tz).date()
    agg = snap.ev.rfm_q(since_day=(today - timedelta(days=rule.window_days)).isoformat(),
                        offset_minutes=utc_offset_minutes(snap.settings.timezone, snap.now), base_currency=rule.currency, rates=rule.rates)
    cols = [clients.c.key, agg.c.last, agg.c.n, agg.c.m, agg.c.unpriced]
    for field in (rule.fields.score, rule.fields.segment):
        cols.append(func.coalesce(func.trim(snap._json_text(clients.c.fields, field)), "") if field else literal(""))
    q = select(*cols).outerjoin(agg, agg.c.client_key == clients.c.key).where(*snap.scope(rule.where, kind)).order_by(clients.c.key)
    rows = snap.conn.execute(q).all()
    keys, lasts, ns, ms, unps, cur_scores, cur_segments = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [], [], [])
    days = [(today - date.fromisoformat(str(v)[:10])).days if v is not None else None for v in lasts]
    frequency = [n or 0 for n in ns]
    monetary = [float(m or 0.0) for m in ms]
    rfm_, scores, segments = score(rule, days, frequency, monetary)
    if not rule.fields.score:
        scores = [""] * len(keys)
    current_scores = cur_scores if rule.fields.score else [""] * len(keys)
    # only the score is written: its segment still serves where.rfm, and never counts as a change
    current_segments = cur_segments if rule.fields.segment else [seg or "" for seg in segments]
    res = cache[rule.name] = Result(rule, keys, days, frequency, monetary, [u or 0 for u in unps], rfm_, scores, segments,
                                    list(zip(current_scores, current_segments, strict=True)), sum(u or 0 for u in unps))
    return res


def _the_rule(snap: Snapshot) -> RfmRule:
    rules = [r for r in snap.settings.rules if isinstance(r, RfmRule)]
    if len(rules) != 1:
        raise ValueError(f"where.rfm needs exactly one rfm rule in the config, found {len(rules)}")
    return rules[0]


def segments_of(snap: Snapshot) -> dict[str, str]:
    """client key -> segment the config's rfm rule gives it in this evaluation."""
    return compute(_the_rule(snap), snap).segments()


def segment_select(snap: Snapshot, segments: list[str]) -> Any:
    """A ``select`` of the clients in ``segments`` (a temporary table filled once per snapshot)."""
    if not snap.__dict__.get("_rfm_table"):
        rfm_now.drop(snap.conn, checkfirst=True)
        rfm_now.create(snap.conn)
        rows = [{"client_key": k, "segment": seg} for k, seg in segments_of(snap).items()]
        for i in range(0, len(rows), 5000):
            snap.conn.execute(rfm_now.insert(), rows[i : i + 5000])
        snap.conn.exec_driver_sql("CREATE INDEX ix_rfm_now ON rfm_now (segment, client_key)")
        snap.__dict__["_rfm_table"] = True
    return select(rfm_now.c.client_key).where(rfm_now.c.segment.in_(list(segments)))


def counts(snap: Snapshot, rule: RfmRule | None = None) -> dict[str, int]:
    """Clients per segment in this evaluation (for reports): the given rfm rule's, or the config's one."""
    return compute(rule or _the_rule(snap), snap).counts()


def segment_counts(settings: Any, store: Any, now: Any) -> dict[str, int]:
    """Clients per segment of the config's rfm rule as of ``now``, for a report that has no snapshot
    open: the same numbers ``plan`` notes (one read transaction)."""
    with Snapshot(settings, store, now) as snap:
        return counts(snap)


def slug(segment: str) -> str:
    """A segment's name as it may appear in a key: ``can't lose`` -> ``can-t-lose``."""
    return re.sub(r"[^0-9a-zа-яіїєґё]+", "-", segment.lower()).strip("-") or "-"


def period_of(generation: int, s: Scored) -> str:
    return f"g{generation}.{s.score or '-'}.{slug(s.segment or '')}"


def parse_period(period: str) -> tuple[int, str, str] | None:
    """``g3.R4F5M3.champions`` -> ``(3, "R4F5M3", "champions")``."""
    m = re.fullmatch(r"g(\d+)\.([^.]*)\.(.*)", period)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


def _target(s: Scored) -> tuple[str, str]:
    return (s.score or "-", slug(s.segment or ""))


def evaluate(rule: RfmRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    res = compute(rule, snap)
    changed = res.changed()
    holding: set[str] = set()
    by_client: dict[str, list[tuple[str, tuple[int, str, str]]]] = {}
    for ep in snap.open_episodes(rule.name):
        parsed = parse_period(split_episode(ep.episode)[2])
        if parsed is not None:
            by_client.setdefault(ep.subject_key, []).append((ep.episode, parsed))
    for key, eps in by_client.items():  # a value written and seen back: its episode holds, nothing to do
        s = res.get(key)
        if s is not None and not s.changed and s.segment is not None:
            holding.update(ep for ep, (_, sc, sg) in eps if (sc, sg) == _target(s))
    history = snap.journal_for(rule.name, [s.key for s in changed])
    views = _views(snap, [s.key for s in changed])
    findings: list[Finding] = []
    fmt = _number_format()
    for s in changed:
        c = views.get(s.key)
        if c is None:
            continue
        generations = [(p[0], p) for e in history.get(s.key, []) if (p := parse_period(split_episode(e.episode)[2])) is not None]
        latest = max(generations, default=None)
        if latest is not None and latest[1][1:] == _target(s):
            period = period_of(latest[0], s)  # already written (or on its way): the same key, a no-op
        else:
            period = period_of(latest[0] + 1 if latest is not None else 0, s)
        fields = {}
        if rule.fields.score:
            fields[rule.fields.score] = s.score
        if rule.fields.segment:
            fields[rule.fields.segment] = s.segment
        findings.append(Finding(
            subject_key=s.key, client=c, period=period, reason=_reason(rule, s, fmt),
            vars={"rfm": {"score": s.score, "segment": s.segment, "r": s.r, "f": s.f, "m": s.m, "recency_days": s.recency_days,
                          "frequency": s.frequency, "monetary": round(s.monetary, 2), "previous_score": s.current_score,
                          "previous_segment": s.current_segment},
                  "days": s.recency_days or 0},
            builtin=[Builtin("f", "field", {"entity": c.key, "fields": fields})],
        ))
    notes = [_("segments: {counts}").format(counts=", ".join(f"{name} {n}" for name, n in res.counts().items()) or "-")]
    if res.unpriced:
        notes.append(_("{n} purchase days in other currencies have no rate in rates: counted for recency and frequency, "
                       "not for money").format(n=res.unpriced))
    return Evaluation(findings, len(res.keys), notes=notes, holding=holding)


def _views(snap: Snapshot, keys: list[str]) -> dict[str, ClientView]:
    """The clients whose values changed, as rule texts see them, but without their contact evidence
    (a first run writes every client; loading each one's contacts would cost more than the rule)."""
    cached = snap.__dict__.get("_clients", {})
    out = {k: c for k in keys if (c := cached.get(k)) is not None}
    todo = [k for k in keys if k not in out]
    for i in range(0, len(todo), 500):
        chunk = todo[i : i + 500]
        for r in snap.conn.execute(select(clients).where(clients.c.key.in_(chunk), clients.c.deleted.is_(False))):
            out[r.key] = ClientView(key=r.key, system=r.system, kind=r.kind, title=r.title or r.key, responsible_key=r.responsible_key,
                                    company_key=r.company_key, first_name=r.first_name, segment=r.segment, tax_id=r.tax_id,
                                    emails=list(r.emails or []), fields=dict(r.fields or {}), birthday=r.birthday, created_at=r.created_at)
        for phone, ck in snap.conn.execute(select(client_phones.c.phone, client_phones.c.client_key)
                                           .where(client_phones.c.client_key.in_(chunk)).order_by(client_phones.c.phone)):
            if ck in out:
                out[ck].phones.append(phone)
    return out


def _number_format() -> Any:
    """:func:`connector.i18n.number`'s grouping and decimal sign for this language, without babel's
    per-call pattern work (a first run writes a reason for every client)."""
    loc = i18n.locale()
    group, decimal = get_group_symbol(loc), get_decimal_symbol(loc)
    return lambda v: f"{v:,.2f}".replace(",", "\0").replace(".", decimal).replace("\0", group)


def _reason(rule: RfmRule, s: Scored, fmt: Any) -> str:
    now = " ".join(x for x in (s.current_score, s.current_segment) if x) or "—"
    if s.recency_days is None:
        return _("never bought: segment {segment}; the CRM shows {current}").format(segment=s.segment, current=now)
    return _("score {score} ({segment}): last purchase {days} days ago, {count} purchase days and {money} {currency} in the last "
             "{window} days; the CRM shows {current}").format(
        score=s.score, segment=s.segment, days=s.recency_days, count=s.frequency, money=fmt(s.monetary),
        currency=rule.currency, window=rule.window_days, current=now)


def clear_reason(rule: RfmRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    s = compute(rule, snap).get(ep.subject_key)
    if s is None or s.segment is None:
        return _("the client is no longer in the rule's scope")
    return _("the client's score is now {score} ({segment})").format(score=s.score or "—", segment=s.segment)
