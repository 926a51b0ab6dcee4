"""The daemon's Binotel push receiver writes calls into the store; a replay changes nothing."""


from sqlalchemy import func, select

from binotel.emulator import BinotelEmulator
from connector.config import load_settings
from connector.daemon import Daemon
from connector.sandbox import generate
from connector.store import Store, calls


def test_push_received_by_the_daemon_lands_once_in_the_store(tmp_path):
    co = generate()
    emu = BinotelEmulator(co)
    url = emu.start()
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"""
store: sqlite:///{tmp_path / 'd.db'}
binotel:
  key: {emu.key}
  secret: {emu.secret}
  url: {url}
  push: {{listen: "127.0.0.1:0", token: pushtoken-1234567890, allow_from: ["127.0.0.1/32"]}}
""", encoding="utf-8")
        d = Daemon(str(cfg), load_settings(cfg))
        d._restart_push()
        try:
            host, port = d._push.address
            call = co.calls[-1]
            attempts = emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/pushtoken-1234567890")
            assert attempts[-1].status == 200 and len(attempts) == 1
            emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/pushtoken-1234567890")  # Binotel redelivers
            bad = emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/wrong", max_attempts=1)
            assert bad[-1].status != 200
            store = Store(f"sqlite:///{tmp_path / 'd.db'}")
            with store.tx() as conn:
                assert conn.execute(select(func.count()).select_from(calls)).scalar_one() == 1
        finally:
            d._push.stop()
    finally:
        emu.stop()


def test_daemon_survives_an_upstream_raising_type_error_and_serves_the_next_push(tmp_path, monkeypatch, caplog):
    import logging
    import threading
    import time

    from binotel.source import BinotelSource

    co = generate()
    emu = BinotelEmulator(co)
    url = emu.start()

    def odd_value(self, stream, cursor, *, full=False):
        raise TypeError(f"unsupported operand type(s) for +: 'int' and 'NoneType' (secret {emu.secret} nearby)")

    monkeypatch.setattr(BinotelSource, "pull", odd_value)
    caplog.set_level(logging.ERROR, logger="connector.daemon")
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"""
store: sqlite:///{tmp_path / 'd.db'}
schedule: {{every_minutes: 0.001}}
binotel:
  key: {emu.key}
  secret: {emu.secret}
  url: {url}
  push: {{listen: "127.0.0.1:0", token: pushtoken-1234567890, allow_from: ["127.0.0.1/32"]}}
""", encoding="utf-8")
        d = Daemon(str(cfg), load_settings(cfg))
        crashed: list[BaseException] = []

        def serve() -> None:
            try:
                d.serve(max_cycles=2)
            except BaseException as e:  # the old daemon died here  # noqa: BLE001
                crashed.append(e)

        worker = threading.Thread(target=serve)
        worker.start()
        end = time.monotonic() + 60  # a safety bound for a slow machine, not a speed assertion
        while getattr(d, "failed_cycles", 0) < 1 and not crashed and time.monotonic() < end:
            time.sleep(0.02)
        assert not crashed and d.failed_cycles >= 1
        host, port = d._push.address
        attempts = emu.push_completed(str(co.calls[-1].id), f"http://{host}:{port}/binotel/pushtoken-1234567890")
        assert attempts[-1].status == 200
        worker.join(60)
        assert not crashed and d.cycles == 2 and d.unexpected_errors == 2
        store = Store(f"sqlite:///{tmp_path / 'd.db'}")
        with store.tx() as conn:
            assert conn.execute(select(func.count()).select_from(calls)).scalar_one() == 1
        assert "TypeError" in caplog.text and "Traceback" in caplog.text and emu.secret not in caplog.text
    finally:
        emu.stop()
