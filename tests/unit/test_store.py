from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from connector import domain as d
from connector.errors import StoreError
from connector.store import SCHEMA_VERSION, Store, meta

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def test_old_store_is_upgraded_in_place_and_keeps_its_data(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = Store(url)
    s.write([d.Manager("bitrix24:user:1", "bitrix24", "1", "Boss")])
    with s.tx() as conn:  # pretend a release with schema v1 wrote this store
        conn.execute(meta.update().where(meta.c.name == "schema_version").values(value="1"))
        conn.execute(text("DROP INDEX ix_journal_state_due"))
    s2 = Store(url)
    with s2.tx() as conn:
        assert conn.execute(select(meta.c.value).where(meta.c.name == "schema_version")).scalar_one() == str(SCHEMA_VERSION)
        idx = {r[1] for r in conn.execute(text("PRAGMA index_list(journal)"))}
    assert "ix_journal_state_due" in idx
    assert s2.counts()["managers"] == 1


def test_newer_store_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = Store(url)
    with s.tx() as conn:
        conn.execute(meta.update().where(meta.c.name == "schema_version").values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StoreError, match="newer than this release"):
        Store(url)


def test_batch_cursor_is_written_with_its_records_and_sweep_marks_deletions(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    c = lambda i: d.Client(f"bitrix24:company:{i}", "bitrix24", str(i), d.ClientKind.COMPANY, f"C{i}", phones=(f"050 123 45 6{i}",))  # noqa: E731
    s.apply("bitrix24", d.Batch("companies", [c(1), c(2), c(3)], cursor="c1"), NOW)
    assert s.cursor("bitrix24", "companies") == "c1"
    s.apply("bitrix24", d.Batch("companies", [], sweep=d.Sweep("bitrix24", "company", {"1", "3"})), NOW)
    assert s.counts()["clients"] == 2
    s.apply("bitrix24", d.Batch("companies", [], deleted=["bitrix24:company:3"]), NOW)
    assert s.counts()["clients"] == 1
    assert s.cursor("bitrix24", "companies") == "c1"


def test_naive_datetimes_never_enter_the_store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(StoreError):
        s.write([d.Payment("bitrix24:payment:1", "bitrix24", "1", None, 10.0, datetime(2026, 1, 1))])


def test_activity_rebinding_replaces_old_bindings(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    a = d.Activity("bitrix24:activity:1", "bitrix24", "1", d.ActivityKind.CALL, ("bitrix24:company:1", "bitrix24:deal:2"), True, NOW)
    s.write([a])
    a.owner_keys = ("bitrix24:company:5",)
    s.write([a])
    assert s.counts()["activities"] == 1
