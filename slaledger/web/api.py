"""The JSON API's views: file and list tickets, read one, act on one; health, readiness and
the metrics. Each view reads the request, builds the command (``commands.py``, shared with
the pages) and answers what sending it gave; nothing here decides a domain question.
Reads go to the worker that owns the ticket's partition (``EdgeView.on_owner``); a
``BadRequest`` a view raises is answered in JSON (``EdgeView.on_request_error``).

The JSON API takes a bearer token only, never the pages' session cookie.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from faust.web import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sla.events import EventDecodeError, validate_ticket_id
from sla.ticket import Command, Status
from sla.view import ticket_view

from .access import TAKING_BACK, BadRequest, find_tickets, taken_back, visible_ticket
from .commands import ACTIONS, command_from_body, filing_command, send
from .edge import EdgeView
from .ports import Principal

MAX_BODY = 64 * 1024
SLA_STATES = ("running", "paused", "at_risk", "breached", "met", "retracted", "excluded", "pending")
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header (None when absent; 422 when malformed)."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise BadRequest(422, f"{IDEMPOTENCY_HEADER} : de 1 à 128 caractères ASCII imprimables, sans espace",
                         IDEMPOTENCY_HEADER)
    return value


async def read_json(request: Request) -> Any:
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise BadRequest(413, f"corps de la requête de plus de {MAX_BODY} octets")
    data = await request.read()
    if len(data) > MAX_BODY:
        raise BadRequest(413, f"corps de la requête de plus de {MAX_BODY} octets")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(422, f"JSON invalide : {exc}") from None
    except RecursionError:
        raise BadRequest(422, "JSON invalide : trop de niveaux d'imbrication") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise BadRequest(422, f"JSON invalide : nombre de plus de {sys.get_int_max_str_digits()} chiffres") from None
    try:  # a lone surrogate ("\ud800") is valid JSON but no text: it could never be written
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest(422, "JSON invalide : caractère Unicode isolé (« \\ud800 ») ; le texte doit être de "
                              "l'UTF-8 valide") from None
    return body


class ApiView(EdgeView):
    async def answer(self, command: Command) -> Response:
        """Send ``command``; the agent's outcome, or why none came, as JSON."""
        sent = await send(self.ports, command)
        return self.json(sent.body, status=sent.status)


class Tickets(ApiView):
    async def post(self, request: Request) -> Response:
        who = await self.edge.authenticate(request)
        key = idempotency_key(request)
        body = await read_json(request)
        return await self.answer(filing_command(body, who, key, self.ports.members))

    async def get(self, request: Request) -> Response:
        who = await self.edge.authenticate(request)
        query = request.query
        try:
            page = max(1, int(query.get("page", "1")))
            size = min(500, max(1, int(query.get("page_size", "50"))))
        except ValueError:
            raise BadRequest(422, "page et page_size doivent être des entiers", "page") from None
        status, member, sla_status = query.get("status"), query.get("member"), query.get("sla_status")
        if status and status not in [s.value for s in Status]:
            raise BadRequest(422, f"unknown status {status!r}", "status")
        if sla_status and sla_status not in SLA_STATES:
            raise BadRequest(422, f"unknown sla_status {sla_status!r}", "sla_status")
        ports = self.ports
        now = self.edge.now()
        rows = await find_tickets(ports, who, now, statuses=[status] if status else (), member=member,
                                  sla_status=sla_status)
        rows.sort(key=lambda t: (t.filed_at is None, t.filed_at), reverse=True)
        chunk = rows[(page - 1) * size: page * size]
        return self.json({
            "items": [ticket_view(t, ports.policy, now) for t in chunk],
            "page": page, "page_size": size, "total": len(rows),
        })


class OneTicket(ApiView):
    async def get(self, request: Request, ticket_id: str) -> Response:
        # Authenticated here first: nothing is forwarded for the anonymous, and a refusal
        # (a 429 with its Retry-After) is answered by this worker, headers kept, against the
        # caller's address (Faust rebuilds a forwarded answer from its status and body only).
        who = await self.edge.authenticate(request)
        return await self.on_owner(request, lambda: self.found(who, ticket_id))

    async def found(self, who: Principal, ticket_id: str) -> Response:
        ticket = visible_ticket(self.ports, who, ticket_id)
        if ticket is None and taken_back(self.ports, ticket_id):
            raise BadRequest(503, TAKING_BACK, headers={"Retry-After": "1"})
        if ticket is None:
            raise BadRequest(404, f"ticket {ticket_id} not found")
        return self.json(ticket_view(ticket, self.ports.policy, self.edge.now()))


class TicketAction(ApiView):
    async def post(self, request: Request, ticket_id: str, action: str) -> Response:
        who = await self.edge.authenticate(request)  # first: nothing is answered to the anonymous
        command_type = ACTIONS.get(action)
        if command_type is None:
            raise BadRequest(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        try:
            validate_ticket_id(ticket_id)
        except EventDecodeError as exc:  # no such ticket can exist: nothing is sent
            raise BadRequest(404, f"ticket {ticket_id} not found ({exc})", "ticket_id") from None
        key = idempotency_key(request)
        body = await read_json(request)
        return await self.answer(command_from_body(command_type, ticket_id, body, who, key, self.ports.members))


class Health(ApiView):
    async def get(self, request: Request) -> Response:
        return self.json({"status": "ok"})


class Ready(ApiView):
    async def get(self, request: Request) -> Response:
        body = self.ports.worker.status()
        return self.json(body, status=200 if body["ready"] else 503)


class Metrics(ApiView):
    async def get(self, request: Request) -> Response:
        who = await self.edge.authenticate(request, scrape=True)
        if not who.reads_metrics:
            raise BadRequest(403, "les métriques sont réservées à l'équipe support")
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
