"""The 1C reference web service through zeep against the loopback SOAP emulator (reference §11)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from connector.config import OneC, OneCSoap
from connector.domain import make_key
from connector.errors import AuthError, NotFound, PermanentError, Rejected, TransientError
from connector.ports import Context, FixedClock, PlannedAction, RequestCounter
from connector.sandbox import generate
from onec.emulator import OneCSandbox
from onec.emulator.base import wall
from onec.sink import SoapSink
from onec.soap import SoapClient
from onec.source import SoapSource
from tests.contract.hostile import DripServer, Recorder, Redirector, http_answer

USER, PASSWORD = "Администратор", "Пароль-sandbox-1C"


@pytest.fixture
def onec():
    sb = OneCSandbox(generate(), "ut11", user=USER, password=PASSWORD)
    sb.start()
    yield sb
    sb.stop()


def soap_cfg(sb: OneCSandbox, **kw) -> OneCSoap:
    base = {"wsdl": sb.soap.wsdl_url, "endpoint": sb.soap.endpoint, "user": USER, "password": PASSWORD}
    base.update(kw)
    return OneCSoap(**base)


def make_client(sb: OneCSandbox, counter: RequestCounter | None = None, **kw) -> SoapClient:
    return SoapClient(soap_cfg(sb, **kw), counter or RequestCounter(), attempts=2, wait=0)


def test_wsdl_points_at_an_internal_host_and_the_endpoint_override_is_used(onec):
    counter = RequestCounter()
    c = make_client(onec, counter)
    assert c.binding_address() == "http://srv-1c-app01.corp.local/base/ws/exchange.1cws"
    assert len(c.users()) == len(onec.company.managers)
    assert onec.soap.calls == ["GetUsers"]  # reached the loopback server, not the WSDL's host
    assert counter.by_method == {"GET": 1, "POST": 1}  # WSDL load + one call, both counted


def test_bundled_reference_wsdl_works_with_an_endpoint(onec):
    c = make_client(onec, wsdl="reference")
    assert c.counterparty(onec.company.companies[0].guid)["Name"] == onec.company.companies[0].title
    with pytest.raises(ValidationError, match="endpoint is required with wsdl: reference"):
        make_client(onec, wsdl="reference", endpoint=None)
    assert OneCSoap(endpoint=onec.soap.endpoint).wsdl == "reference"  # the bundled WSDL is the default


def test_read_operations_return_the_seeded_base(onec):
    co = onec.company
    c = make_client(onec)
    cps = c.counterparties(None)
    assert {r["Ref"] for r in cps} == {x.guid for x in co.companies if x.in_onec}
    first = next(r for r in cps if r["Ref"] == co.companies[0].guid)
    assert first["TaxId"] == co.companies[0].tax_id and first["ManagerRef"] == co.manager(co.companies[0].responsible).guid
    assert first["Phones"]["Phone"] and first["Emails"]["Email"] == co.companies[0].emails
    recent = c.counterparties(co.anchor.replace(tzinfo=None) - timedelta(days=5))
    assert 0 < len(recent) < len(cps)
    docs = c.documents_since(datetime(2000, 1, 1), ["sale"])
    assert {d["Ref"] for d in docs} == {d.guid for d in co.onec_docs if d.type == "sale"}
    debts = c.debts(co.anchor.replace(tzinfo=None))
    debtor = co.company(co.stories["debtor"])
    assert [(d["CounterpartyRef"], float(d["Amount"]), float(d["OverdueAmount"])) for d in debts] == [(debtor.guid, 42000.0, 42000.0)]
    assert debts[0]["OverdueSince"] == co.debts[0].due


def test_operation_names_map_to_the_integrators_names(onec):
    onec.soap.renames = {"GetDebts": "ПолучитьДолги", "FindTaskByMarker": "НайтиЗадачу"}
    c = make_client(onec, operations={"GetDebts": "ПолучитьДолги", "FindTaskByMarker": "НайтиЗадачу"})
    assert len(c.debts(onec.company.anchor.replace(tzinfo=None))) == 1
    assert c.find_task("cn-000000000000") is None
    assert onec.soap.calls == ["GetDebts", "FindTaskByMarker"]
    plain = make_client(onec)  # our names against the renamed WSDL: the operation is missing
    with pytest.raises(PermanentError, match="does not match the expected WSDL"):
        plain.debts(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("faultcode", "code", "write", "expected"),
    [
        ("soap:Server", None, False, TransientError),  # a BSL exception while reading: retry later
        ("soap:Server", None, True, Rejected),  # a BSL exception refusing a write
        ("soap:Client", None, False, Rejected),
        ("soap:Server", "NotFound", False, NotFound),
        ("soap:Server", "Conflict", True, Rejected),
        ("soap:Server", "Busy", True, TransientError),
    ],
)
def test_soap_faults_map_onto_the_error_tree(onec, faultcode, code, write, expected):
    c = SoapClient(soap_cfg(onec), RequestCounter(), attempts=1, wait=0)
    onec.soap.fault_next = (faultcode, code, "Ошибка при вызове метода контекста (ВызватьИсключение): текст")
    with pytest.raises(expected) as e:
        if write:
            c.set_responsible(onec.company.companies[0].guid, onec.company.managers[2].guid)
        else:
            c.users()
    assert type(e.value) is expected
    assert str(e.value).startswith("onec ws ")


def test_auth_and_transport_failures(onec):
    bad = SoapClient(soap_cfg(onec, password="not-the-password"), RequestCounter(), attempts=1, wait=0)
    with pytest.raises(AuthError) as e:
        bad.users()
    assert "not-the-password" not in str(e.value)
    c = make_client(onec)
    c.users()
    onec.soap.fail_next = 5
    with pytest.raises(TransientError) as e:
        c.users()
    assert e.value.status == 502
    onec.soap.fail_next = 0
    with pytest.raises(PermanentError):
        make_client(onec, endpoint=onec.soap.origin + "/base/ws/missing.1cws").users()


def test_soap_source_pulls_every_stream(onec):
    co = onec.company
    clock = FixedClock(co.anchor)
    ctx = Context(clock=clock)
    cfg = OneC(soap=soap_cfg(onec))
    src = SoapSource(cfg, ctx, client=make_client(onec, ctx.counter("onec")))
    out, cursors = {}, {}
    for stream in src.streams():
        for b in src.pull(stream, None):
            out.setdefault(stream, []).extend(b.records)
            cursors[stream] = b.cursor
    assert len(out["users"]) == len(co.managers)
    assert len(out["counterparties"]) == len([c for c in co.companies if c.in_onec])
    assert {d.doc_type for d in out["documents"]} == {"order", "invoice", "sale", "payment"}
    assert [d.amount for d in out["debts"]] == [42000.0] and out["debts"][0].overdue_since == co.debts[0].due
    clock.at = co.anchor + timedelta(hours=1)
    onec.ib.sets["Catalog_Контрагенты"].rows[co.companies[0].guid]["Description"] = "Renamed"
    onec.ib.touch(co.companies[0].guid, wall(co.anchor + timedelta(minutes=30)))
    batches = list(src.pull("counterparties", cursors["counterparties"]))
    names = [c.title for b in batches for c in b.records]
    assert "Renamed" in names and len(names) < len(out["counterparties"]) and batches[-1].sweep is None
    assert list(src.pull("users", cursors["users"])) == []


def test_soap_sink_creates_once_reconciles_and_reassigns(onec):
    co = onec.company
    ctx = Context(clock=FixedClock(co.anchor))
    sink = SoapSink(OneC(soap=soap_cfg(onec)), ctx, client=make_client(onec, ctx.counter("onec")))
    cp = co.companies[0]
    cp_key = make_key("onec", "counterparty", cp.guid)
    a = PlannedAction(key="lost:x:2026-05-01:0", rule="lost", type="task", system="onec", subject_key=cp_key, client_key=cp_key,
                      payload={"title": "Win back", "description": "bought 3 times", "responsible": make_key("onec", "user", co.managers[2].guid),
                               "deadline": "2026-11-24T18:00:00+02:00", "bindings": [cp_key]}, reason="t")
    assert sink.reconcile(a) is None
    res = sink.execute(a)
    tasks = onec.ib.sets["Task_ЗадачаИсполнителя"].rows
    assert a.marker in tasks[res.remote_id]["Содержание"] and tasks[res.remote_id]["СрокИсполнения"] == "2026-11-24T18:00:00"
    assert sink.reconcile(a).remote_id == res.remote_id
    assert sink.execute(a).remote_id == res.remote_id and len(tasks) == 1
    old, new = co.manager(cp.responsible).guid, co.managers[6].guid
    r = PlannedAction(key="release:x:1:r", rule="release", type="reassign", system="onec", subject_key="s", client_key=None,
                      payload={"entities": [cp_key], "to": make_key("onec", "user", new), "from": make_key("onec", "user", old)}, reason="t")
    assert sink.reconcile(r) is None
    sink.execute(r)
    partner = onec.ib.sets["Catalog_Партнеры"].rows[onec.ib.sets["Catalog_Контрагенты"].rows[cp.guid]["Партнер_Key"]]
    assert partner["ОсновнойМенеджер_Key"] == new and sink.reconcile(r) is not None
    partner["ОсновнойМенеджер_Key"] = co.managers[7].guid  # changed in 1C since planning
    with pytest.raises(Rejected):
        sink.execute(r)
    assert not sink.supports("comment")


# ---------------------------------------------------------------- credentials stay home

EXTRA_SCHEMA = b"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:connector-test:imported">
  <xs:element name="Extra" type="xs:string"/>
</xs:schema>"""


def wsdl_importing(sb: OneCSandbox, location: str) -> bytes:
    """The reference WSDL plus one schema that imports ``location`` (as an integrator's WSDL might)."""
    extra = (f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:connector-test:extra">'
             f'<xs:import namespace="urn:connector-test:imported" schemaLocation="{location}"/></xs:schema>')
    return sb.soap.wsdl().replace(b"<types>", b"<types>" + extra.encode(), 1)


def test_a_schema_import_from_another_host_is_not_fetched_and_gets_no_credentials(onec, monkeypatch):
    other = Recorder("127.0.0.2", body=EXTRA_SCHEMA, content_type="text/xml")
    try:
        patched = wsdl_importing(onec, other.origin + "/schema.xsd")
        monkeypatch.setattr(onec.soap, "wsdl", lambda: patched)
        with pytest.raises(PermanentError, match="not the configured 1C host") as e:
            make_client(onec).users()
        assert "127.0.0.2" in str(e.value)
        assert other.requests == [] and onec.soap.calls == []
        # listed in allow_hosts: fetched, but without the 1C credentials
        assert len(make_client(onec, allow_hosts=["127.0.0.2"]).users()) == len(onec.company.managers)
        [(method, path, headers, _)] = other.requests
        assert (method, path) == ("GET", "/schema.xsd") and "Authorization" not in headers
    finally:
        other.stop()


@pytest.mark.parametrize("local", ["secret-schema", "/etc/passwd"])
def test_a_file_import_is_refused(onec, monkeypatch, tmp_path, local):
    path = tmp_path / "extra.xsd"
    path.write_bytes(EXTRA_SCHEMA)  # a valid schema: read, it would load without an error
    target = path if local == "secret-schema" else local
    patched = wsdl_importing(onec, f"file://{target}")
    monkeypatch.setattr(onec.soap, "wsdl", lambda: patched)
    with pytest.raises(PermanentError, match="refers to the local file"):
        make_client(onec).users()
    assert onec.soap.calls == []
    if local == "secret-schema":  # its folder listed in allow_hosts: read
        assert len(make_client(onec, allow_hosts=[f"file://{tmp_path}/"]).users()) == len(onec.company.managers)


def test_without_endpoint_the_service_is_the_wsdl_url_never_the_wsdls_soap_address(onec):
    c = make_client(onec, endpoint=None)
    assert c.binding_address() == "http://srv-1c-app01.corp.local/base/ws/exchange.1cws"
    assert c.endpoint == onec.soap.endpoint
    assert len(c.users()) == len(onec.company.managers) and onec.soap.calls == ["GetUsers"]


def test_a_redirect_is_not_followed_and_its_target_receives_nothing(onec):
    target = Recorder("127.0.0.2")
    redirect = Redirector(target.origin)
    try:
        c = make_client(onec, endpoint=redirect.origin + "/base/ws/exchange.1cws")
        with pytest.raises(PermanentError, match="redirected the request to 127.0.0.2") as e:
            c.users()
        assert redirect.hits == 1 and target.requests == []
        assert PASSWORD not in str(e.value)
    finally:
        redirect.stop()
        target.stop()


def test_a_dripping_endpoint_ends_in_a_clear_timeout_within_the_deadline(onec):
    envelope = (b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
                b'<soap:Body/></soap:Envelope>')
    drip = DripServer(http_answer(envelope, "text/xml; charset=utf-8"), interval=0.05)
    try:
        c = SoapClient(soap_cfg(onec, endpoint=drip.url + "/base/ws/exchange.1cws"), RequestCounter(), attempts=1, wait=0,
                       operation_timeout=1.0)
        with pytest.raises(TransientError, match="no complete answer within 1 s"):
            c.users()
        assert drip.completed == 0
    finally:
        drip.stop()
