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


# ---------------------------------------------------------------- privacy


def _mode(path) -> int:
    import os
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_sqlite_store_is_0600_in_a_0700_folder_and_so_are_its_wal_and_shm(tmp_path):
    import os

    old = os.umask(0o022)  # the usual umask: files 0644 unless the connector says otherwise
    try:
        path = tmp_path / "var" / "connector" / "s.db"
        s = Store(f"sqlite:///{path}")
        s.kv_set("bitrix24.refresh_token", "rotated-refresh-token")
        with s.tx() as conn:  # keep a reader open so the -wal and -shm files exist
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            assert _mode(path) == 0o600
            for suffix in ("-wal", "-shm"):
                assert _mode(f"{path}{suffix}") == 0o600, suffix
        assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    finally:
        os.umask(old)


def test_an_existing_world_readable_store_is_tightened(tmp_path):
    import os

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "s.db"
    Store(f"sqlite:///{path}")
    os.chmod(path, 0o644)
    Store(f"sqlite:///{path}")
    assert _mode(path) == 0o600 and _mode(folder) == 0o755  # an existing folder is left alone


def test_tokens_in_kv_are_encrypted_when_a_key_is_set(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    url = f"sqlite:///{tmp_path / 's.db'}"
    Store(url).kv_set("bitrix24.refresh_token", "written-before-the-key")  # an older store
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", key)
    s = Store(url)
    assert s.kv_get("bitrix24.refresh_token") == "written-before-the-key"  # still readable
    s.kv_set("bitrix24.refresh_token", "rotated-refresh-token")
    s.kv_set("bitrix24.access_token", "fresh-access-token")
    with s.tx() as conn:
        raw = dict(conn.execute(text("SELECT name, value FROM kv")).all())
    assert all(v.startswith("fernet:") for v in raw.values())
    assert "rotated-refresh-token" not in (tmp_path / "s.db").read_bytes().decode("latin-1")
    assert s.kv_get("bitrix24.refresh_token") == "rotated-refresh-token"
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(StoreError, match="CONNECTOR_SECRET_KEY is not the key it was written with"):
        Store(url).kv_get("bitrix24.refresh_token")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", f"{Fernet.generate_key().decode()},{key}")  # rotation: new first
    assert Store(url).kv_get("bitrix24.access_token") == "fresh-access-token"
    monkeypatch.delenv("CONNECTOR_SECRET_KEY")
    with pytest.raises(StoreError, match="encrypted, but CONNECTOR_SECRET_KEY is not set"):
        Store(url).kv_get("bitrix24.access_token")
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", "not-a-key")
    with pytest.raises(StoreError, match="is not a Fernet key") as e:
        Store(url)
    assert "not-a-key" not in str(e.value)


@pytest.mark.parametrize("password", ["pa/ss@w0rd", "s3cr@t/pw", "plain-secret"])
def test_a_postgres_url_with_slash_or_at_in_the_password_is_never_printed(password):
    url = f"postgresql+psycopg://app:{password}@127.0.0.1:1/connector"
    with pytest.raises(StoreError) as e:
        Store(url).counts()
    assert "postgresql+psycopg://app:***@127.0.0.1:1/connector" in str(e.value)
    for part in [password, *(p for p in password.replace("@", "/").split("/") if len(p) > 2)]:
        assert part not in str(e.value), part


def test_moments_come_back_aware_and_exact_from_columns_and_aggregates(tmp_path):
    from datetime import timedelta, timezone

    from sqlalchemy import func

    from connector.store import calls

    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    kyiv = timezone(timedelta(hours=2))
    moments = [datetime(2026, 11, 23, 9, 0, tzinfo=UTC), datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=kyiv)]
    s.write([d.Call(f"binotel:call:{i}", "binotel", str(i), "in", "+380441234567", m) for i, m in enumerate(moments)])
    with s.tx() as conn:
        got = conn.execute(select(calls.c.started_at).order_by(calls.c.started_at)).scalars().all()
        latest = conn.execute(select(func.max(calls.c.started_at))).scalar_one()
        none = conn.execute(select(func.max(calls.c.started_at)).where(calls.c.key == "nope")).scalar_one()
    assert got == moments and all(m.tzinfo is UTC for m in got)
    assert latest == moments[1] and latest.tzinfo is UTC and none is None
