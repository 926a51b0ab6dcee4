"""A 1C order's own status (УТ 11 ``Статус``) read through OData; optional: a base without it still syncs."""

from __future__ import annotations

import logging

import pytest

from connector.config import OneC, OneCOData
from connector.ports import Context, FixedClock
from connector.sandbox import generate
from onec.emulator import OneCSandbox
from onec.source import ODataSource
from tests.contract.test_onec_odata import PASSWORD, USER, pull


def _source(sb: OneCSandbox, **fields: str) -> ODataSource:
    cfg = OneC(odata=OneCOData(url=sb.odata.url, user=USER, password=PASSWORD), preset=sb.preset, fields=fields)
    src = ODataSource(cfg, Context(clock=FixedClock(sb.company.anchor)))
    src.client.wait = 0
    return src


@pytest.fixture(params=["ut11", "unf"])
def base(request):
    sb = OneCSandbox(generate(), request.param, user=USER, password=PASSWORD)
    sb.env = sb.start()
    yield sb
    sb.stop()


def test_orders_carry_their_1c_status_where_the_configuration_keeps_one(base):
    docs, _, _, _ = pull(_source(base), "documents", None)
    orders = [d for d in docs if d.doc_type == "order"]
    assert orders
    if base.preset == "ut11":
        assert {d.status for d in orders} == {"Закрыт"}  # every seeded sale shipped its order
    else:
        assert {d.status for d in orders} == {None}  # УНФ keeps its state as a catalog reference: not read by default
    assert {d.status for d in docs if d.doc_type != "order"} == {None}


def test_a_base_without_the_status_field_syncs_with_one_warning(base, caplog):
    if base.preset != "ut11":
        pytest.skip("the status field is a ut11 preset name")
    base.odata.hidden["Document_ЗаказКлиента"] = {"Статус"}  # a release without it, or not published
    with caplog.at_level(logging.WARNING):
        docs, _, _, _ = pull(_source(base), "documents", None)
    assert [d for d in docs if d.doc_type == "order"] and {d.status for d in docs} == {None}
    warned = [r.getMessage() for r in caplog.records if "Статус" in r.getMessage()]
    assert len(warned) == 1 and "onec.fields.order.status" in warned[0]
