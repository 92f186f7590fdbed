"""Every error the API gives is JSON with a message: out-of-range dates are 422 naming the
field, and an unexpected failure is a logged 500 in JSON, never aiohttp's plain text."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sla.ticket import CommandType
from streams.api import ANONYMOUS, BadRequest, command_from_body, json_errors

FILE = {"kind": "incident", "channel": "portal", "product": "ent", "member": "m-001", "subject": "Panne"}


async def file_handler(request: web.Request) -> web.Response:
    try:
        command_from_body(CommandType.FILE, "SL-1", json.loads(await request.read()), ANONYMOUS)
    except BadRequest as exc:
        return web.json_response({"error": exc.message, "field": exc.field}, status=exc.status)
    return web.json_response({}, status=201)


async def broken_handler(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


async def call(path: str, body: Any) -> tuple[int, str, Any]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/file", file_handler)
    app.router.add_post("/broken", broken_handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(path, json=body)
        return response.status, response.headers["Content-Type"], await response.json()


def test_dates_out_of_range_are_422_naming_the_field() -> None:
    for value in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1900-01-01T00:00:00Z"):
        status, _, body = asyncio.run(call("/file", {**FILE, "received_at": value}))
        assert status == 422 and body["field"] == "received_at", (value, body)
    status, _, body = asyncio.run(call("/file", {**FILE, "received_at": "2026-03-02T09:00:00+01:00"}))
    assert status == 201, body


def test_an_unexpected_failure_is_a_json_500() -> None:
    status, content_type, body = asyncio.run(call("/broken", {}))
    assert status == 500 and content_type.startswith("application/json") and body["error"]
