"""Links 1C counterparties to CRM clients: by tax id, by a stored 1C GUID, or by phone.

The methods are tried in the configured order; the first one that yields exactly one CRM client
wins. Several candidates make the counterparty *ambiguous*, none *unmatched*; both are reported by
``connector status`` and neither is ever guessed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import delete, select

from connector.config import Settings
from connector.store import Store, client_phones, clients, links


def primary_system(settings: Settings) -> str:
    """The CRM whose clients the rules act on: Bitrix24 when configured, else 1C."""
    return "bitrix24" if settings.bitrix24 is not None else "onec"


def link_clients(settings: Settings, store: Store, now: datetime) -> dict[str, int]:
    if settings.onec is None or settings.bitrix24 is None:
        return {}
    methods = list(settings.onec.match)
    with store.tx() as conn:
        crm = conn.execute(
            select(clients.c.key, clients.c.tax_id, clients.c.guid).where(clients.c.system == "bitrix24", clients.c.deleted.is_(False))
        ).all()
        by_tax: dict[str, set[str]] = defaultdict(set)
        by_guid: dict[str, set[str]] = defaultdict(set)
        for key, tax, guid in crm:
            if tax:
                by_tax[tax].add(key)
            if guid:
                by_guid[guid.lower()].add(key)
        phones: dict[str, set[str]] = defaultdict(set)
        phones_by_client: dict[str, list[str]] = defaultdict(list)
        for phone, key in conn.execute(select(client_phones.c.phone, client_phones.c.client_key)):
            phones[phone].add(key)
            phones_by_client[key].append(phone)
        onec = conn.execute(
            select(clients.c.key, clients.c.tax_id, clients.c.guid).where(clients.c.system == "onec", clients.c.deleted.is_(False))
        ).all()
        rows = []
        stats = {"linked": 0, "ambiguous": 0, "unmatched": 0}
        for key, tax, guid in onec:
            chosen, method, candidates = None, None, set()
            for m in methods:
                if m == "tax_id" and tax:
                    cands = by_tax.get(tax, set())
                elif m == "guid_field" and guid:
                    cands = by_guid.get(guid.lower(), set())
                elif m == "phone":
                    cands = set()
                    for p in phones_by_client.get(key, ()):
                        cands |= {k for k in phones.get(p, set()) if k.startswith("bitrix24:")}
                else:
                    cands = set()
                if len(cands) == 1:
                    chosen, method = next(iter(cands)), m
                    break
                if len(cands) > 1:
                    candidates |= cands
            if chosen:
                stats["linked"] += 1
                rows.append({"foreign_key": key, "client_key": chosen, "method": method, "candidates": None, "updated_at": now})
            elif candidates:
                stats["ambiguous"] += 1
                rows.append({"foreign_key": key, "client_key": None, "method": "ambiguous", "candidates": sorted(candidates), "updated_at": now})
            else:
                stats["unmatched"] += 1
                rows.append({"foreign_key": key, "client_key": None, "method": "unmatched", "candidates": None, "updated_at": now})
        before = {r.foreign_key: (r.client_key, r.method, r.candidates) for r in conn.execute(select(links))}
        after = {r["foreign_key"]: (r["client_key"], r["method"], r["candidates"]) for r in rows}
        if before != after:  # rewritten only when a link changed: evidence derived from links is rebuilt then
            conn.execute(delete(links))
            store._upsert(conn, links, rows, ["foreign_key"])
            moved = {k for k in before.keys() | after.keys() if before.get(k, (None,))[0] != after.get(k, (None,))[0]}
            # the clients a counterparty counted for before and counts for now
            store.mark_evidence_dirty(conn, owners={c for k in moved for c in (before.get(k, (None,))[0], after.get(k, (None,))[0])})
    return stats


def link_report(store: Store) -> list[dict]:
    """Ambiguous and unmatched counterparties, for ``connector status``."""
    with store.tx() as conn:
        rows = conn.execute(
            select(links.c.foreign_key, links.c.method, links.c.candidates, clients.c.title)
            .join(clients, clients.c.key == links.c.foreign_key, isouter=True)
            .where(links.c.client_key.is_(None))
            .order_by(links.c.method, clients.c.title)
        ).all()
    return [{"key": r[0], "status": r[1], "candidates": r[2] or [], "title": r[3]} for r in rows]
