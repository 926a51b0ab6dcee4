"""A loopback Bitrix24 REST v1 portal for contract tests, benchmarks and the sandbox.

    portal = Portal.from_company(company, webhook_code="...", plan="standard", rate_limit=True,
                                 time_scale=0.0, scopes=("crm", "task", "user", "department", "im", "bizproc"))
    srv = EmulatorServer(portal).start()      # srv.webhook_url, srv.base_url, srv.stop()
    portal.stats / inject_fault / touch / add / delete / table / issue_oauth / expire_tokens / clock
    portal.install_app / uninstall_app / on_trigger / run_robot / redeliver_robot / send_sms / drain  (applications)

Modules: ``server`` (HTTP, auth, limits, batch, envelope; its docstring lists the wire rules),
``methods`` (one handler per REST method), ``tables`` (typed rows + filter/order/page engine),
``schema`` (field lists), ``seed`` (synthetic company -> tables), ``phpquery`` (PHP brackets and
``json_encode`` quirks), ``portal`` (state, credentials, limits, faults, statistics), ``apps`` (the
application side: installation, robots, triggers, events, external calls, the SMS provider).
"""

from bitrix.emulator.portal import Portal
from bitrix.emulator.server import EmulatorServer

__all__ = ["Portal", "EmulatorServer"]
