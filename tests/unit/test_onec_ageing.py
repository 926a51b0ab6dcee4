"""First-in first-out ageing of 1C receivables (УНФ, УТП: no due dates in the register)."""

from datetime import date, timedelta

from onec.ageing import Part, Shipment, age, overdue, with_register_dues

TODAY = date(2026, 11, 23)
WINDOW = TODAY - timedelta(days=365)


def ship(ref: str, days_ago: int, amount: float, term: int | None = None) -> Shipment:
    return Shipment(ref, f"РН-{ref}", TODAY - timedelta(days=days_ago), amount, term)


def test_a_partial_payment_leaves_the_newest_shipment_unpaid_and_the_older_one_partly():
    # shipped 10 000 (40 days ago) and 5 000 (10 days ago), paid 7 000: 8 000 owed
    parts = age(8000.0, [ship("a", 40, 10000.0), ship("b", 10, 5000.0)], default_term_days=14, window_start=WINDOW)
    assert [(p.ref, p.unpaid) for p in parts] == [("a", 3000.0), ("b", 5000.0)]
    assert parts[0].due == TODAY - timedelta(days=26) and parts[1].due == TODAY + timedelta(days=4)
    assert overdue([(p.due, p.unpaid) for p in parts], TODAY) == (3000.0, TODAY - timedelta(days=26))


def test_several_shipments_fully_paid_but_the_recent_ones_are_not_attributed():
    shipments = [ship("old", 90, 1000.0), ship("mid", 30, 2000.0), ship("new", 5, 500.0)]
    parts = age(2500.0, shipments, default_term_days=14, window_start=WINDOW)
    assert [p.ref for p in parts] == ["mid", "new"]  # "old" was paid first
    amount, since = overdue([(p.due, p.unpaid) for p in parts], TODAY)
    assert (amount, since) == (2000.0, TODAY - timedelta(days=16))


def test_the_contract_term_sets_the_due_date_and_a_zero_term_means_the_default():
    parts = age(3000.0, [ship("long", 40, 1000.0, term=60), ship("short", 20, 1000.0, term=7), ship("unset", 18, 1000.0, term=0)],
                default_term_days=14, window_start=WINDOW)
    due = {p.ref: p.due for p in parts}
    assert due == {"long": TODAY + timedelta(days=20), "short": TODAY - timedelta(days=13), "unset": TODAY - timedelta(days=4)}
    # the oldest shipment is not yet due; the debt is overdue since the earliest passed due date
    assert overdue([(p.due, p.unpaid) for p in parts], TODAY) == (2000.0, TODAY - timedelta(days=13))


def test_a_debt_older_than_every_shipment_in_the_window_is_overdue_at_least_since_the_window():
    parts = age(5000.0, [ship("a", 3, 1200.0)], default_term_days=14, window_start=WINDOW)
    assert parts[0] == Part(None, "", WINDOW, 3800.0, 3800.0, WINDOW + timedelta(days=14))
    assert parts[1].ref == "a" and parts[1].unpaid == 1200.0
    assert overdue([(p.due, p.unpaid) for p in parts], TODAY) == (3800.0, WINDOW + timedelta(days=14))
    assert parts[0].as_dict() == {"number": "", "date": WINDOW.isoformat(), "amount": 3800.0, "unpaid": 3800.0,
                                  "due": (WINDOW + timedelta(days=14)).isoformat()}


def test_a_credit_balance_or_a_paid_up_one_has_nothing_to_age():
    assert age(-1500.0, [ship("a", 40, 1000.0)], default_term_days=14, window_start=WINDOW) == []
    assert age(0.004, [ship("a", 40, 1000.0)], default_term_days=14, window_start=WINDOW) == []
    assert overdue([], TODAY) == (0.0, None)


def test_due_today_is_not_yet_overdue_and_an_advance_bucket_reduces_the_overdue_amount():
    assert overdue([(TODAY, 100.0)], TODAY) == (0.0, None)
    assert overdue([(TODAY - timedelta(days=1), 100.0)], TODAY) == (100.0, TODAY - timedelta(days=1))
    assert overdue([(TODAY - timedelta(days=9), 300.0), (TODAY - timedelta(days=2), -100.0)], TODAY) == (200.0, TODAY - timedelta(days=9))
    assert overdue([(TODAY - timedelta(days=9), 100.0), (TODAY - timedelta(days=2), -300.0)], TODAY) == (0.0, None)


def test_shipments_of_the_same_day_are_taken_in_a_stable_order_and_kopecks_survive():
    parts = age(100.01, [ship("b", 5, 50.0), ship("a", 5, 50.0), ship("c", 5, 50.0)], default_term_days=14, window_start=WINDOW)
    assert [(p.ref, round(p.unpaid, 2)) for p in parts] == [("a", 0.01), ("b", 50.0), ("c", 50.0)]


def test_register_due_dates_are_laid_newest_first_over_the_aged_parts():
    parts = age(3000.0, [ship("a", 40, 2000.0), ship("b", 10, 2000.0)], default_term_days=14, window_start=WINDOW)
    register = [(TODAY - timedelta(days=25), 1000.0), (TODAY + timedelta(days=5), 2000.0)]
    dated = with_register_dues(parts, register)
    assert [(p.ref, p.unpaid, p.due) for p in dated] == [("a", 1000.0, TODAY - timedelta(days=25)), ("b", 2000.0, TODAY + timedelta(days=5))]
    # what the register does not cover keeps the contract-term date
    assert with_register_dues(parts, [])[0].due == parts[0].due
