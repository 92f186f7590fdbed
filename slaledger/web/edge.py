"""What every view of the HTTP edge is handed, and the base class that hands it.

The views are named classes, one a route, attached by ``slaledger.web.register``; Faust
builds each with the app and its web server only, so what they share (the ports, the
caller's authentication, the table whose owner answers a ticket's reads) is one ``Edge``
kept on the aiohttp application, as aiohttp keeps an application's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web as aioweb
from faust.exceptions import SameNode
from faust.types import CollectionT
from faust.web import Request, Response, View
from faust.web.exceptions import WebError

from .access import Authenticate, BadRequest
from .ports import Ports


@dataclass(frozen=True)
class Edge:
    ports: Ports
    authenticate: Authenticate
    route_table: CollectionT  # the worker's tickets table: its owner of a ticket id answers the ticket's reads

    @property
    def tz(self) -> ZoneInfo:
        """The policy's time zone, in which the pages write instants and read typed dates."""
        return self.ports.policy.versions[0].tz

    def now(self) -> datetime:
        return datetime.now(tz=self.tz)


EDGE = aioweb.AppKey("slaledger_edge", Edge)


def web_app(app: Any) -> aioweb.Application:
    """The aiohttp application behind a Faust app's web server (``streams.web_server``)."""
    application: aioweb.Application = app.web.web_app
    return application


class EdgeView(View):
    """A view of the product: its ``edge``, its refusals in JSON, and the ticket owner's answer."""

    @property
    def edge(self) -> Edge:
        return web_app(self.app)[EDGE]

    @property
    def ports(self) -> Ports:
        return self.edge.ports

    async def on_request_error(self, request: Request, exc: WebError) -> Response:
        """A ``BadRequest`` the view raised, as the JSON API answers it: ``{"error", "field"}``."""
        if not isinstance(exc, BadRequest):
            return await super().on_request_error(request, exc)
        return self.json(exc.body(), status=exc.status, headers=exc.headers)

    async def on_owner(self, request: Request, answer: Callable[[], Awaitable[Response]]) -> Response:
        """``answer()`` when this worker holds the ticket ``{ticket_id}`` of the path (its
        partition); else the request is forwarded to the worker that does, where the same
        view runs again (``app.table_route``, as a call: ``answer`` closes over what the view
        already knows, the caller first)."""
        try:
            return await self.app.router.route_req(self.edge.route_table.name, request.match_info["ticket_id"],
                                                   self.web, request)
        except SameNode:
            return await answer()
