"""Every error the API gives is JSON with a message: out-of-range dates are 422 naming the
field, and an unexpected failure is a logged 500 in JSON, never aiohttp's plain text."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sla.ticket import CommandType, Ticket
from slaledger.web.access import ANONYMOUS, BadRequest, json_errors
from slaledger.web.api import read_json
from slaledger.web.commands import command_from_body

FILE = {"kind": "incident", "channel": "portal", "product": "ent", "member": "m-001", "subject": "Panne"}


async def file_handler(request: web.Request) -> web.Response:
    try:
        command_from_body(CommandType.FILE, "SL-1", json.loads(await request.read()), ANONYMOUS)
    except BadRequest as exc:
        return web.json_response({"error": exc.message, "field": exc.field}, status=exc.status)
    return web.json_response({}, status=201)


async def read_handler(request: web.Request) -> web.Response:
    try:
        await read_json(request)
    except BadRequest as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    return web.json_response({}, status=200)


async def broken_handler(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


async def call(path: str, body: Any) -> tuple[int, str, Any]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/file", file_handler)
    app.router.add_post("/broken", broken_handler)
    app.router.add_post("/read", read_handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(path, **({"data": body} if isinstance(body, bytes) else {"json": body}))
        return response.status, response.headers["Content-Type"], await response.json()


def test_dates_out_of_range_are_422_naming_the_field() -> None:
    for value in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1900-01-01T00:00:00Z"):
        status, _, body = asyncio.run(call("/file", {**FILE, "received_at": value}))
        assert status == 422 and body["field"] == "received_at", (value, body)
    status, _, body = asyncio.run(call("/file", {**FILE, "received_at": "2026-03-02T09:00:00+01:00"}))
    assert status == 201, body


@pytest.mark.parametrize(("body", "why"), [
    (b'{"subject": ' + b"9" * 5000 + b"}", "chiffres"),  # more digits than Python converts
    (b"[" * 30_000 + b"]" * 30_000, "imbrication"),  # deeper than the parser's recursion
    (b'{"subject": "\\ud800"}', "Unicode isolé"),  # a lone surrogate: no UTF-8 text
    (b'{"subject": ', "JSON invalide"),
])
def test_json_that_is_no_text_is_a_french_422(body: bytes, why: str) -> None:
    status, content_type, answer = asyncio.run(call("/read", body))
    assert status == 422 and content_type.startswith("application/json") and why in answer["error"], answer


def test_an_unexpected_failure_is_a_json_500() -> None:
    status, content_type, body = asyncio.run(call("/broken", {}))
    assert status == 500 and content_type.startswith("application/json") and body["error"]


def test_the_running_filter_means_on_time_not_at_risk() -> None:
    """« Dans les délais » (sla_status=running) and « À risque » (at_risk) do not overlap."""
    from types import SimpleNamespace

    from sla.ticket import ticket_from_dict, ticket_to_dict
    from slaledger.settings import load_policy
    from slaledger.web.access import find_tickets
    from tests.conftest import at, filed

    early, late = Ticket("EARLY"), Ticket("LATE")
    early.apply(filed("2026-03-02T11:00:00+01:00", ticket_id="EARLY"))
    late.apply(filed("2026-03-02T08:00:00+01:00", ticket_id="LATE"))  # due 12:00, at risk from 11:00
    stored = [ticket_to_dict(t) for t in (early, late)]

    async def find(statuses: object, member: object) -> list[Ticket]:
        return [ticket_from_dict(raw) for raw in stored]

    ports = SimpleNamespace(policy=load_policy(), finder=SimpleNamespace(find=find))
    now = at("2026-03-02T11:30:00+01:00")

    def ids(state: str) -> list[str]:
        found = asyncio.run(find_tickets(ports, ANONYMOUS, now, sla_status=state))  # type: ignore[arg-type]
        return sorted(t.ticket_id for t in found)

    assert ids("running") == ["EARLY"] and ids("at_risk") == ["LATE"]


def test_a_referent_cannot_date_a_fact_an_agent_can() -> None:
    import pytest

    from service.principal import Principal
    from slaledger.web.access import BadRequest as Refused

    referent = Principal("t1", "referent", "commune-de-blois", "commune-de-blois")
    agent = Principal("t2", "agent", None, "alice")
    body = {"kind": "assistance", "channel": "portal", "member": "commune-de-blois", "product": "ent",
            "subject": "Accès", "received_at": "2026-11-16T10:00:00+01:00"}
    with pytest.raises(Refused) as refused:
        command_from_body(CommandType.FILE, "SL-TEST", body, referent)
    assert refused.value.status == 422 and refused.value.field == "received_at"
    assert command_from_body(CommandType.FILE, "SL-TEST", body, agent).occurred_at is not None


@pytest.mark.parametrize(("command", "body", "french"), [
    (CommandType.ACKNOWLEDGE, {}, "un référent dépose des demandes et y répond"),
    (CommandType.FILE, {**FILE, "member": "commune-de-tours"}, "que pour son propre membre"),
])
def test_a_referent_is_refused_in_french(command: CommandType, body: dict[str, Any], french: str) -> None:
    from service.principal import Principal

    referent = Principal("t1", "referent", "commune-de-blois", "commune-de-blois")
    with pytest.raises(BadRequest) as refused:
        command_from_body(command, "SL-1", body, referent)
    assert refused.value.status == 403 and french in refused.value.message
