"""The HTTP edge: the JSON API and the web pages, attached to the worker's Faust web server
from outside (``register``); they reach the product only through ``ports.Ports``.

Every route is here, each a named view class. Every view denies by default (it
authenticates its caller first) except health, readiness, sign-in and the static files.
"""

from __future__ import annotations

import faust
from faust.types import CollectionT

from . import api, dispute, openapi, pages, signin, whatif
from .access import authenticator, json_errors
from .edge import EDGE, Edge, web_app
from .ports import Ports

# In this order: aiohttp tries a path's routes in the order they were added.
ROUTES = (
    ("/api/tickets", api.Tickets),
    ("/api/tickets/{ticket_id}", api.OneTicket),
    ("/api/tickets/{ticket_id}/{action}", api.TicketAction),
    ("/healthz", api.Health),
    ("/readyz", api.Ready),
    ("/metrics", api.Metrics),
    ("/api/openapi.json", openapi.OpenApi),
    ("/", pages.QueuePage),
    ("/fragments/queue", pages.QueueFragment),
    ("/new-ticket", pages.NewTicket),
    ("/tickets/{ticket_id}/actions", pages.TicketActions),
    ("/tickets/{ticket_id}", pages.TicketPage),
    ("/login", signin.Login),
    ("/logout", signin.Logout),
    ("/static/{name}", pages.Static),
    ("/api/tickets/{ticket_id}/dispute-file", dispute.DisputeFile),
)


def register(app: faust.App, route_table: CollectionT, ports: Ports) -> None:
    """The API and the web pages, on the worker's port: ``route_table`` is the table whose
    owner of a ticket id answers the ticket's reads."""
    application = web_app(app)
    application.middlewares.append(json_errors)
    application[EDGE] = Edge(ports, authenticator(ports), route_table)
    for path, view in ROUTES:
        app.page(path)(view)
    if ports.whatif is not None:  # drafts and an archive: the admins' what-if page
        app.page(whatif.PATH)(whatif.WhatIfPage)
