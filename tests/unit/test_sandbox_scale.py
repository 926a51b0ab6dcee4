"""The benchmark company (``generate_at_scale``): the proportions it is asked for, rule work in
known shares."""

from __future__ import annotations

from datetime import timedelta

from connector.sandbox import ActivityLog, SActivity, generate_at_scale


def test_generate_at_scale_keeps_the_requested_proportions_per_client():
    co = generate_at_scale(400, seed=5, deals_per_company=3, activities_per_company=20, invoices_per_company=0.5,
                           calls_per_company=0.3, sale_share=0.3)
    n = len(co.companies) - len(co.stories)
    assert n == 400 and co.stories["forgotten"] == 1  # the stories come first, as generate() makes them
    assert 1.2 <= len(co.contacts) / len(co.companies) <= 1.4
    assert 2.6 <= len(co.deals) / n <= 3.4
    assert 18 <= len(co.activities) / n <= 23
    assert 0.4 <= len(co.invoices) / n <= 0.6
    assert 0.22 <= len(co.calls) / n <= 0.38  # answered calls skip the quiet tenth
    assert 0.24 <= sum(d.type == "sale" for d in co.onec_docs) / n <= 0.36


def test_quiet_clients_have_no_recent_contact_and_some_keep_a_future_task():
    co = generate_at_scale(600, seed=8, quiet_share=0.1, kept_share=0.5)
    owner_company = {ct.id: ct.company_id for ct in co.contacts}
    deal_company = {d.id: d.company_id for d in co.deals}
    newest: dict[int, object] = {}
    for a in co.activities:
        cid = a.owner_id if a.owner_type == "company" else owner_company.get(a.owner_id) if a.owner_type == "contact" \
            else deal_company.get(a.owner_id)
        if cid and (cid not in newest or a.start > newest[cid]):
            newest[cid] = a.start
    stories = set(co.stories.values())
    quiet = {cid for cid, at in newest.items() if at < co.anchor - timedelta(days=62) and cid not in stories}
    assert 0.05 <= len(quiet) / 600 <= 0.16
    future = {int(t.bindings[0][3:]) for t in co.tasks if t.deadline and t.deadline > co.anchor and t.status == 2}
    assert quiet & future and quiet - future  # some kept by a task due later, the rest forgotten
    recent_calls = {c.external_number for c in co.calls if c.disposition == "ANSWER"}
    assert not recent_calls & {co.company(cid).phones[0] for cid in quiet}


def test_activity_log_builds_activities_as_generate_shapes_them():
    co = generate_at_scale(50, seed=2)
    log = co.activities
    assert isinstance(log, ActivityLog) and len(list(log)) == len(log)
    a = log[-1]
    assert isinstance(a, SActivity) and a.id == max(x.id for x in log)
    assert a.end > a.start and a.created == a.start - timedelta(hours=1) and a.modified == a.end
    assert a.deadline == (a.start if a.type_id in (1, 2) else a.end) and a.start <= co.anchor

