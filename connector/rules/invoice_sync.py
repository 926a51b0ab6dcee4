"""Invoice sync: a payment posted in 1C closes the matching Bitrix24 smart invoice.

An open Bitrix24 invoice of a client linked to a 1C counterparty finds its 1C counterpart by the
methods of ``match``, in order; the first method that finds one decides:

- ``number``: a 1C invoice (or order) of the same client whose number is the one the Bitrix24
  invoice keeps in ``number_field``; it is paid when 1C marks it paid, or when posted payments based
  on it (or on a 1C invoice made from that order) cover it;
- ``basis``: the 1C document whose GUID the invoice keeps in ``basis_field`` (``xmlId``, which the
  1C exchange fills), paid the same way;
- ``amount``: a posted payment of the same client for the invoice's amount (within ``tolerance``),
  dated from the invoice's issue up to ``amount_window_days`` after it, that no other invoice or 1C
  document claims; each payment closes one invoice, the oldest first.

A counterpart that is paid only in part closes nothing. The write is the invoice's move to its
paid stage (``invoice_stage``: the success stage of its own funnel, or ``paid_stage``), once per
invoice ever (the episode is ``paid``): an invoice already paid or declined is never touched, and a
person who moves it back wins. With ``deal_stage``, the deal whose invoices are then all paid (the
declined ones aside) moves too (``deal_stage``, after the invoices' moves).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connector.calendar import BusinessCalendar
from connector.config import InvoiceSyncRule
from connector.domain import make_key
from connector.i18n import _, day, money
from connector.rules.base import Builtin, Evaluation, Finding, episode_of, in_scope
from connector.snapshot import CrmInvoiceView, DealView, DocView, EpisodeView, Snapshot
from connector.templates import deal_var, paid_by_var, synced_invoice_var

PERIOD = "paid"  # one episode per invoice, ever: a person moving it back is never overruled
PENDING = {"planned", "retry_wait", "in_flight"}
_FUNNEL = re.compile(r"^C(\d+):")
_NEVER = datetime(1, 1, 1, tzinfo=UTC)


def _norm(number: object) -> str:
    return re.sub(r"\s+", "", str(number or "")).casefold()


def funnel_of_invoice(stage_id: str) -> int | None:
    """``DT31_3:N`` -> 3 (smart-invoice stages carry their funnel)."""
    m = re.match(r"^DT31_(\d+):", stage_id or "")
    return int(m.group(1)) if m else None


def funnel_of_deal(stage_id: str) -> int:
    """``C3:WON`` -> 3; the general funnel's stages carry no prefix (0)."""
    m = _FUNNEL.match(stage_id or "")
    return int(m.group(1)) if m else 0


@dataclass
class _Match:
    inv: CrmInvoiceView
    method: str
    proof: DocView  # the 1C document that shows the payment (a payment, or a document marked paid)
    document: DocView | None  # the 1C invoice or order matched (number, basis)
    paid: float


class _Books:
    """The 1C documents of the invoices' clients, and what pays what."""

    def __init__(self, docs: list[DocView], tolerance: float):
        self.tol = tolerance
        self.by_key = {d.key: d for d in docs}
        self.payments = [d for d in docs if d.doc_type == "payment"]
        self.paid_by: dict[str, list[DocView]] = defaultdict(list)
        for p in self.payments:
            if p.basis_key:
                self.paid_by[p.basis_key].append(p)
        self.made_from: dict[str, list[str]] = defaultdict(list)  # order -> invoices made from it
        self.by_number: dict[str, list[DocView]] = defaultdict(list)
        for d in docs:
            if d.doc_type in ("invoice", "order"):
                if d.number:
                    self.by_number[_norm(d.number)].append(d)
                if d.doc_type == "invoice" and d.basis_key:
                    self.made_from[d.basis_key].append(d.key)

    def payments_of(self, doc: DocView) -> list[DocView]:
        """Posted payments based on the document, or on a 1C invoice made from it (an order)."""
        keys = [doc.key, *(self.made_from.get(doc.key, []) if doc.doc_type == "order" else [])]
        return sorted({p.key: p for k in keys for p in self.paid_by.get(k, [])}.values(), key=lambda p: (p.date, p.key))


def evaluate(rule: InvoiceSyncRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    notes: list[str] = []
    open_invoices = snap.crm_invoices(open_only=True)
    snap.clients([c for i in open_invoices for c in i.clients])
    cands = [i for i in open_invoices if _client(i, snap) is not None and in_scope(_client(i, snap), rule.where, snap)]
    if not cands:
        return Evaluation([], snap.count_crm_invoices())
    books = _Books(snap.onec_documents(("invoice", "order", "payment"), clients={c for i in cands for c in i.clients}),
                   rule.tolerance)
    # what the number and basis methods identify, first: their payments are never taken by an amount
    ident: dict[str, dict[str, DocView | None]] = {}
    for inv in cands:
        ident[inv.key] = {m: _identify(m, inv, rule, books, notes) for m in rule.match if m != "amount"}
    claimed = {d.key for per in ident.values() for d in per.values() if d is not None}
    taken = {p.key for k in claimed for p in books.payments_of(books.by_key[k])}
    matches: list[_Match] = []
    for inv in sorted(cands, key=lambda i: (i.issued_at or _NEVER, i.key)):
        for method in rule.match:
            if method == "amount":
                hit = _by_amount(inv, rule, books, taken, cal)
                if hit is not None:
                    taken.add(hit.proof.key)
                    matches.append(hit)
                    break
                continue
            doc = ident[inv.key].get(method)
            if doc is None:
                continue
            hit = _settled(inv, method, doc, books, notes)
            if hit is not None:
                matches.append(hit)
            break  # the counterpart is found: paid or not, no other method second-guesses it
    findings = [_finding(rule, m, snap, cal) for m in matches]
    if rule.deal_stage is not None:
        _deal_writes(rule, findings, matches, snap, notes)
    return Evaluation(findings, snap.count_crm_invoices(), notes=notes)


def _client(inv: CrmInvoiceView, snap: Snapshot):
    """The primary client the invoice belongs to: its own client, else the first it counts for."""
    if inv.client_key and snap.client(inv.client_key) is not None:
        return snap.client(inv.client_key)
    return next((c for k in sorted(inv.clients) if (c := snap.client(k)) is not None), None)


def _identify(method: str, inv: CrmInvoiceView, rule: InvoiceSyncRule, books: _Books, notes: list[str]) -> DocView | None:
    """The 1C document the invoice names by its number or by a GUID, if it names one of its client's."""
    if method == "number":
        value = inv.number if rule.number_field == "accountNumber" else inv.fields.get(rule.number_field)
        if not _norm(value):
            return None
        same = [d for d in books.by_number.get(_norm(value), []) if d.clients & inv.clients]
        same = [d for d in same if d.doc_type == "invoice"] or same
        if len(same) > 1:
            notes.append(_("{invoice}: several 1C documents have the number {number}; it is not matched by number.")
                         .format(invoice=inv.title, number=value))
            return None
        return same[0] if same else None
    value = str(inv.fields.get(rule.basis_field) or "").strip().strip("{}").lower()
    doc = books.by_key.get(make_key("onec", "document", value)) if value else None
    return doc if doc is not None and doc.clients & inv.clients else None


def _settled(inv: CrmInvoiceView, method: str, doc: DocView, books: _Books, notes: list[str]) -> _Match | None:
    """The matched document's payment, when it is paid in full and covers the invoice."""
    tol = books.tol
    if doc.doc_type == "payment":  # a GUID naming the payment itself
        return _Match(inv, method, doc, None, doc.amount) if doc.amount >= inv.amount - tol else None
    pays = books.payments_of(doc)
    total = round(sum(p.amount for p in pays), 2)
    whole = doc.paid is True or (doc.amount > 0 and total >= doc.amount - tol)
    if not whole:
        return None  # not paid, or paid in part: nothing moves
    if total >= inv.amount - tol:
        return _Match(inv, method, pays[-1] if pays else doc, doc, total)
    if doc.paid is True and not pays and abs(doc.amount - inv.amount) <= tol:
        return _Match(inv, method, doc, doc, doc.amount)
    notes.append(_("{invoice}: 1C document {document} is paid, but for {paid}; the invoice is for {amount}. It is not moved.")
                 .format(invoice=inv.title, document=doc.number, paid=money(max(total, doc.amount if doc.paid else 0), doc.currency or inv.currency),
                         amount=money(inv.amount, inv.currency)))
    return None


def _by_amount(inv: CrmInvoiceView, rule: InvoiceSyncRule, books: _Books, taken: set[str], cal: BusinessCalendar) -> _Match | None:
    if inv.issued_at is None or inv.amount <= 0:
        return None
    start = cal.local(inv.issued_at).date()
    end = start + timedelta(days=rule.amount_window_days)
    for p in books.payments:
        if p.key in taken or not (p.clients & inv.clients) or abs(p.amount - inv.amount) > rule.tolerance:
            continue
        if p.currency and inv.currency and p.currency.upper() != inv.currency.upper():
            continue
        if start <= cal.local(p.date).date() <= end:
            return _Match(inv, "amount", p, None, p.amount)
    return None


def _reason(m: _Match, cal: BusinessCalendar) -> str:
    inv, proof, doc = m.inv, m.proof, m.document
    if m.method == "amount":
        days = (cal.local(proof.date).date() - cal.local(inv.issued_at).date()).days if inv.issued_at else 0
        return _("{invoice} is paid in 1C: payment {payment} of {date} for {amount} from the same client, {days} days after "
                 "the invoice.").format(invoice=inv.title, payment=proof.number, date=day(cal.local(proof.date)),
                                        amount=money(proof.amount, proof.currency or inv.currency), days=days)
    assert doc is not None
    if proof.key == doc.key:
        return _("{invoice} is paid in 1C: document {document} of {date} is marked paid.").format(
            invoice=inv.title, document=doc.number, date=day(cal.local(doc.date)))
    if m.method == "number":
        text = _("{invoice} is paid in 1C: payment {payment} of {date} completes document {document} with the same number "
                 "({paid} of {amount}).")
    else:
        text = _("{invoice} is paid in 1C: payment {payment} of {date} completes document {document} the invoice was made "
                 "from ({paid} of {amount}).")
    cur = doc.currency or inv.currency
    return text.format(invoice=inv.title, payment=proof.number, date=day(cal.local(proof.date)), document=doc.number,
                       paid=money(m.paid, cur), amount=money(doc.amount, cur))


def _finding(rule: InvoiceSyncRule, m: _Match, snap: Snapshot, cal: BusinessCalendar) -> Finding:
    inv, proof = m.inv, m.proof
    c = _client(inv, snap)
    doc = paid_by_var(key=proof.key, kind=proof.doc_type, number=proof.number, when=cal.local(proof.date).date(),
                      amount=proof.amount, currency=proof.currency or inv.currency, method=m.method)
    payload = {"invoice": inv.key, "title": inv.title, "number": inv.number, "from": inv.stage_id,
               "funnel": funnel_of_invoice(inv.stage_id), "to": rule.paid_stage, "document": proof.key,
               "document_number": proof.number, "method": m.method}
    return Finding(
        subject_key=inv.key, client=c, period=PERIOD, reason=_reason(m, cal),
        vars={"invoice": synced_invoice_var(key=inv.key, title=inv.title, number=inv.number, amount=inv.amount,
                                            currency=inv.currency, stage=inv.stage_id),
              "document": doc, "deal": deal_var(), "days": 0},
        responsible_key=inv.responsible_key if (inv.responsible_key or "").startswith("bitrix24:") else None,
        builtin=[Builtin("s", "invoice_stage", payload, system="bitrix24")],
    )


def _deal_target(rule: InvoiceSyncRule, deal: DealView) -> str | None:
    funnel = funnel_of_deal(deal.stage_id)
    if isinstance(rule.deal_stage, dict):
        return rule.deal_stage.get(funnel)
    return rule.deal_stage if rule.deal_stage and funnel_of_deal(rule.deal_stage) == funnel else None


def _deal_writes(rule: InvoiceSyncRule, findings: list[Finding], matches: list[_Match], snap: Snapshot, notes: list[str]) -> None:
    """The deal whose invoices are all paid (declined ones aside) once these move: after their moves."""
    by_deal: dict[str, list[tuple[Finding, _Match]]] = defaultdict(list)
    for f, m in zip(findings, matches, strict=True):
        if m.inv.deal_key:
            by_deal[m.inv.deal_key].append((f, m))
    if not by_deal:
        return
    deals = {d.key: d for d in snap.crm_deals(keys=list(by_deal))}
    siblings: dict[str, list[CrmInvoiceView]] = defaultdict(list)
    for i in snap.crm_invoices(deals=list(by_deal)):
        siblings[i.deal_key or ""].append(i)
    for deal_key, items in sorted(by_deal.items()):
        deal = deals.get(deal_key)
        if deal is None or deal.outcome != "open":
            continue
        closing = {m.inv.key for _f, m in items}
        if not all(i.outcome == "won" or i.key in closing for i in siblings[deal_key] if i.outcome != "lost"):
            continue
        target = _deal_target(rule, deal)
        if target is None:
            notes.append(_("Deal {deal}: its invoices are paid, but no deal_stage is set for its funnel {funnel}; it is not moved.")
                         .format(deal=deal.title, funnel=funnel_of_deal(deal.stage_id)))
            continue
        if target == deal.stage_id:
            continue
        last, _m = max(items, key=lambda t: t[0].subject_key)
        after = [f"{episode_of(rule.name, f.subject_key, f.period)}:s" for f, _x in items]
        last.vars["deal"] = deal_var(key=deal.key, title=deal.title, stage=deal.stage_id, to=target)
        paid = sorted(i.title for i in siblings[deal_key] if i.outcome != "lost")
        reason = _("All invoices of deal {deal} are paid ({invoices}): it moves from stage {stage} to {target}.").format(
            deal=deal.title, invoices=", ".join(paid), stage=deal.stage_id, target=target)
        last.builtin.append(Builtin("d", "deal_stage", {"deal": deal.key, "title": deal.title, "from": deal.stage_id, "to": target},
                                    system="bitrix24", after=after, reason=reason))


def clear_reason(rule: InvoiceSyncRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """Ended once the invoice is paid or declined, and nothing of the episode waits (the deal's move
    after the invoice's: ending the episode would cancel it)."""
    if any(e.state in PENDING for e in snap.family_entries([ep.episode]).get(ep.episode, [])):
        return None
    found = snap.crm_invoices(keys=[ep.subject_key])
    if not found:
        return _("the invoice was deleted")
    inv = found[0]
    if inv.outcome == "won":
        return _("{invoice} is in a paid stage").format(invoice=inv.title)
    if inv.outcome == "lost":
        return _("{invoice} was declined").format(invoice=inv.title)
    return None
