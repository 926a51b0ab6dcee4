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
  push: {{listen: "127.0.0.1:0", token: pushtoken123, allow_from: ["127.0.0.1/32"]}}
""", encoding="utf-8")
        d = Daemon(str(cfg), load_settings(cfg))
        d._restart_push()
        try:
            host, port = d._push.address
            call = co.calls[-1]
            attempts = emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/pushtoken123")
            assert attempts[-1].status == 200 and len(attempts) == 1
            emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/pushtoken123")  # Binotel redelivers
            bad = emu.push_completed(str(call.id), f"http://{host}:{port}/binotel/wrong", max_attempts=1)
            assert bad[-1].status != 200
            store = Store(f"sqlite:///{tmp_path / 'd.db'}")
            with store.tx() as conn:
                assert conn.execute(select(func.count()).select_from(calls)).scalar_one() == 1
        finally:
            d._push.stop()
    finally:
        emu.stop()
