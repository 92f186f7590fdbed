"""The HTTP API (Faust web views, JSON).

A command is validated here first (unknown fields, wrong types → 422 naming the field;
nothing is sent), then sent to the commands topic keyed by ticket id; the handler waits
for the agent's outcome (201/200 with the ticket, or 404/409/422 with the domain error).
Reads go to the worker that owns the ticket's partition (``table_route``).

Retries. A command sent with an ``Idempotency-Key`` header gets a command id derived from
the key, the caller's token, the action, the ticket and the body (and a filing gets a
ticket id derived from the key and the token): sent again after a cut connection, a 504 or a crash, it is the same
command, which the agent recognises in the ticket's state and answers again
(``"replayed": true``) without applying it twice. Without the header every request is a
new command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.outcomes import CommandUnavailable, NoOutcome, Outcome
from service.principal import SCRAPERS, Principal
from sla.catalogue import Catalogue, UnknownName
from sla.clock import ClockStatus
from sla.events import (
    KINDS,
    PAYLOAD_SCHEMAS,
    EventDecodeError,
    EventType,
    parse_instant,
    validate_payload,
    validate_ticket_id,
)
from sla.ticket import COMMAND_EVENT, Command, CommandType, Status
from sla.view import ticket_view

from .access import BadRequest, authenticator, find_tickets, json_errors, visible_ticket
from .ports import Ports

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
ACTIONS = {
    "acknowledge": CommandType.ACKNOWLEDGE,
    "inform": CommandType.INFORM,
    "wait-for-customer": CommandType.WAIT_FOR_CUSTOMER,
    "customer-response": CommandType.CUSTOMER_RESPONSE,
    "reclassify": CommandType.RECLASSIFY,
    "resolve": CommandType.RESOLVE,
    "close": CommandType.CLOSE,
    "reopen": CommandType.REOPEN,
}
# The business time of the action, when it is not "now" (phone call taken earlier, etc.).
TIME_FIELD = {CommandType.FILE: "received_at"}
SLA_STATES = ("running", "paused", "at_risk", "breached", "met", "retracted", "excluded", "pending")


REFERENT_COMMANDS = frozenset({CommandType.FILE, CommandType.CUSTOMER_RESPONSE})
COMMAND_ROLES = frozenset({"agent", "referent", "admin"})
# Who may put a business time on a fact (within the policy's max_backdate): the support team
# and administrators (the iTop connector dates its facts with iTop's own times).
DATING_ROLES = frozenset({"agent", "admin"})

# The agent's outcomes as HTTP answers: the one place a domain result becomes a status code.
RESULT_STATUS = {"created": 201, "accepted": 200, "not_found": 404, "conflict": 409, "invalid": 422}


def http_status(outcome: Outcome) -> int:
    return RESULT_STATUS[outcome.result]


IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("7d0c6f5e-1b2a-5c3d-9e8f-a1b2c3d4e5f6")
_TICKET_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def new_ticket_id(seed: str | None = None) -> str:
    """Short, unambiguous, URL-safe: « SL-7K2M9QX4PA ». Random, or derived from ``seed``
    (an idempotency key and its caller: a retried filing names the same ticket)."""
    if seed is None:
        return "SL-" + "".join(secrets.choice(_TICKET_ALPHABET) for _ in range(10))
    digest = hashlib.sha256(seed.encode()).digest()
    return "SL-" + "".join(_TICKET_ALPHABET[b % len(_TICKET_ALPHABET)] for b in digest[:10])


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header (None when absent; 422 when malformed)."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise BadRequest(422, f"{IDEMPOTENCY_HEADER} : de 1 à 128 caractères ASCII imprimables, sans espace",
                         IDEMPOTENCY_HEADER)
    return value


def keyed_command_id(key: str, who: Principal, command_type: CommandType, ticket_id: str, body: Any) -> uuid.UUID:
    """The command id of a request sent with an idempotency key: the same for every retry
    of it (same token, action, ticket and body), different otherwise; another body under
    the same key is another request, not a replay that would drop its content."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, "\x1f".join((key_scope(who, key), str(command_type), ticket_id,
                                                             canonical)))


def key_scope(who: Principal, key: str) -> str:
    """Whose key it is: the caller's token (labels and actors are not unique), and the key."""
    return f"{who.token_id}\x1f{who.actor}\x1f{key}"


def command_from_body(command_type: CommandType, ticket_id: str, body: Any, who: Principal,
                      key: str | None = None, members: Catalogue | None = None) -> Command:
    """Validate a request body strictly and build the command (raises BadRequest 4xx);
    its id derives from the idempotency ``key`` when there is one. A filing's member must be
    in the ``members`` directory (by id or name; the command carries the id); the product is
    the domain's to check (the policy's catalogue, ``sla.ticket.decide``).

    A referent's commands are scoped to their member: another member's ticket does not
    exist for them (404, decided by the ticket agent), and they file for their own member.
    """
    if who.role not in COMMAND_ROLES:
        raise BadRequest(403, f"le rôle {who.role} n'envoie aucune commande")
    if who.role == "referent" and command_type not in REFERENT_COMMANDS:
        raise BadRequest(403, "un référent dépose des demandes et y répond ; les autres actions sont celles de "
                              "l'équipe support")
    if not isinstance(body, dict):
        raise BadRequest(422, "le corps de la requête doit être un objet JSON")
    if who.role == "referent" and command_type is CommandType.FILE:
        typed = body.get("member", who.member)
        if members and isinstance(typed, str):  # the member's name or an alias names it too
            try:
                typed = members.resolve(typed)
            except UnknownName as exc:
                raise BadRequest(422, exc.message, "member") from None
        own = who.member
        if members and own:
            with contextlib.suppress(UnknownName):  # a member the directory lacks: refused below (422)
                own = members.resolve(own)
        if typed not in (own, who.member):
            raise BadRequest(403, "un référent ne dépose de demandes que pour son propre membre", "member")
        body = {**body, "member": who.member}
    event_type = COMMAND_EVENT[command_type]
    time_field = TIME_FIELD.get(command_type, "occurred_at")
    allowed = set(PAYLOAD_SCHEMAS[event_type]) | {time_field}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(422, f"champ(s) inconnu(s) : {', '.join(unknown)} ; "
                              f"champs acceptés : {', '.join(sorted(allowed))}",
                         unknown[0])
    payload = {k: v for k, v in body.items() if k != time_field}
    if members and isinstance(payload.get("member"), str):
        try:
            payload["member"] = members.resolve(payload["member"])
        except UnknownName as exc:
            raise BadRequest(422, exc.message, "member") from None
    # Business time defaults to the moment the request arrived, not when the agent gets to it;
    # that moment is also the fact's recording time.
    received = datetime.now(UTC)
    occurred: datetime | None = received
    if body.get(time_field) is not None:
        if who.role not in DATING_ROLES:
            # A member's own account could otherwise manufacture breaches (a filing dated a
            # week back is born breached): their facts carry the moment the GIP received them.
            raise BadRequest(422, f"{time_field} : un référent ne date pas ses demandes ni ses réponses ; la date "
                                  "retenue est celle de leur réception", time_field)
        try:
            occurred = parse_instant(body[time_field], time_field)
        except EventDecodeError as exc:
            raise BadRequest(422, str(exc), time_field) from None
    try:
        validate_payload(event_type, payload, wire=True)
    except EventDecodeError as exc:
        field = str(exc).split(":", 1)[0].removeprefix("payload.")
        raise BadRequest(422, str(exc).replace("payload.", ""), field) from None
    scope = who.member if who.role == "referent" else None
    command_id = keyed_command_id(key, who, command_type, ticket_id, body) if key is not None else uuid.uuid4()
    return Command(command_type, ticket_id, who.actor, payload, occurred, command_id, reply=True,
                   scope_member=scope, received_at=received)


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


def register_views(app: faust.App, route_table: Any, ports: Ports) -> None:
    """Attach the API to the worker's Faust web server, from outside: ``route_table`` is the
    table whose owner answers a ticket's reads (``table_route``)."""
    app.web.web_app.middlewares.append(json_errors)  # type: ignore[attr-defined]
    authenticate = authenticator(ports)

    def error(view: View, exc: BadRequest) -> Response:
        body: dict[str, Any] = {"error": exc.message}
        if exc.field:
            body["field"] = exc.field
        return view.json(body, status=exc.status, headers=exc.headers)

    async def send_command(view: View, command: Command) -> Response:
        if not ports.commands.accepting:
            return view.json({"error": "service en cours de démarrage, réessayez dans un instant"}, status=503)
        cid = str(command.command_id)
        try:
            outcome = await ports.commands.submit(command)
        except CommandUnavailable:
            return view.json({"error": "journal des événements indisponible ; réessayez dans un instant "
                                       "(avec la même Idempotency-Key si vous en avez envoyé une)",
                              "command_id": cid}, status=503)
        except NoOutcome:
            return view.json({"error": "pas de réponse à temps ; la commande peut encore être appliquée",
                              "command_id": cid}, status=504)
        status = http_status(outcome)
        log.info("command answered", ticket_id=command.ticket_id, command_id=cid, status=status,
                 command=str(command.type))
        return view.json(outcome.body, status=status)

    @app.page("/api/tickets")
    class Tickets(View):
        async def post(self, request: Request) -> Response:
            try:
                who = await authenticate(request)
                key = idempotency_key(request)
                body = await read_json(request)
                ticket_id = new_ticket_id(key_scope(who, key) if key is not None else None)
                command = command_from_body(CommandType.FILE, ticket_id, body, who, key, ports.members)
            except BadRequest as exc:
                return error(self, exc)
            response = await send_command(self, command)
            return response

        async def get(self, request: Request) -> Response:
            try:
                who = await authenticate(request)
            except BadRequest as exc:
                return error(self, exc)
            query = request.query
            try:
                page = max(1, int(query.get("page", "1")))
                size = min(500, max(1, int(query.get("page_size", "50"))))
            except ValueError:
                return self.json({"error": "page et page_size doivent être des entiers", "field": "page"}, status=422)
            status, member, sla_status = query.get("status"), query.get("member"), query.get("sla_status")
            if status and status not in [s.value for s in Status]:
                return self.json({"error": f"unknown status {status!r}", "field": "status"}, status=422)
            if sla_status and sla_status not in SLA_STATES:
                return self.json({"error": f"unknown sla_status {sla_status!r}", "field": "sla_status"}, status=422)
            now = datetime.now(tz=ports.policy.versions[0].tz)
            rows = await find_tickets(ports, who, now, statuses=[status] if status else (), member=member,
                                      sla_status=sla_status)
            rows.sort(key=lambda t: (t.filed_at is None, t.filed_at), reverse=True)
            chunk = rows[(page - 1) * size: page * size]
            return self.json({
                "items": [ticket_view(t, ports.policy, now) for t in chunk],
                "page": page, "page_size": size, "total": len(rows),
            })

    @app.page("/api/tickets/{ticket_id}")
    class OneTicket(View):
        async def get(self, request: Request, ticket_id: str) -> Response:
            # Authenticated here first: nothing is forwarded for the anonymous, and a refusal
            # (a 429 with its Retry-After) is answered by this worker, headers kept, against the
            # caller's address (Faust rebuilds a forwarded answer from its status and body only).
            try:
                await authenticate(request)
            except BadRequest as exc:
                return error(self, exc)
            return await self.routed(request)

        @app.table_route(table=route_table, match_info="ticket_id")  # type: ignore[arg-type]
        async def routed(self, request: Request) -> Response:
            ticket_id = request.match_info["ticket_id"]
            try:
                who = await authenticate(request)
            except BadRequest as exc:
                return error(self, exc)
            ticket = visible_ticket(ports, who, ticket_id)
            if ticket is None:
                return self.json({"error": f"ticket {ticket_id} not found"}, status=404)
            return self.json(ticket_view(ticket, ports.policy, datetime.now(tz=ports.policy.versions[0].tz)))

    @app.page("/api/tickets/{ticket_id}/{action}")
    class TicketAction(View):
        async def post(self, request: Request, ticket_id: str, action: str) -> Response:
            try:
                who = await authenticate(request)  # first: nothing is answered to the anonymous
            except BadRequest as exc:
                return error(self, exc)
            command_type = ACTIONS.get(action)
            if command_type is None:
                return self.json({"error": f"unknown action {action!r}; one of {', '.join(ACTIONS)}"}, status=404)
            try:
                validate_ticket_id(ticket_id)
            except EventDecodeError as exc:  # no such ticket can exist: nothing is sent
                return self.json({"error": f"ticket {ticket_id} not found ({exc})", "field": "ticket_id"},
                                 status=404)
            try:
                key = idempotency_key(request)
                body = await read_json(request)
                command = command_from_body(command_type, ticket_id, body, who, key, ports.members)
            except BadRequest as exc:
                return error(self, exc)
            return await send_command(self, command)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            body = ports.worker.status()
            return self.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            try:
                who = await authenticate(request, scrape=True)
            except BadRequest as exc:
                return error(self, exc)
            if who.role not in SCRAPERS:
                return self.json({"error": "les métriques sont réservées à l'équipe support"}, status=403)
            return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            try:
                await authenticate(request)
            except BadRequest as exc:
                return error(self, exc)
            return self.json(openapi_document())


def _schema_for(event_type: EventType, time_field: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required = []
    for name, spec in PAYLOAD_SCHEMAS[event_type].items():
        if isinstance(spec.kind, tuple):
            props[name] = {"type": "string", "enum": list(spec.kind)}
        elif spec.kind is bool:
            props[name] = {"type": "boolean"}
        elif spec.kind is datetime:
            props[name] = {"type": "string", "format": "date-time"}
        else:
            props[name] = {"type": "string", "maxLength": spec.max_length}
        if spec.required:
            required.append(name)
            if spec.kind is str:
                props[name]["minLength"] = 1
    props[time_field] = {"type": "string", "format": "date-time",
                         "description": "business time of the action, if not now (ISO 8601 with offset)"}
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def openapi_document() -> dict[str, Any]:
    error_schema = {"schema": {"$ref": "#/components/schemas/Error"}}
    error = {"description": "error", "content": {"application/json": error_schema}}
    ticket = {"description": "the ticket", "content": {"application/json": {"schema": {"type": "object"}}}}
    retry_key = {"name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                 "description": "Any 1 to 128 printable ASCII characters chosen by the client for this request: "
                                "sent again with the same key (after a cut connection, a 504 or a crash), the "
                                "request is answered again (\"replayed\": true) and applied once.",
                 "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}}
    paths: dict[str, Any] = {
        "/api/tickets": {
            "post": {
                "summary": "File a ticket",
                "parameters": [retry_key],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _schema_for(EventType.TICKET_FILED, "received_at")}}},
                "responses": {"201": ticket, "409": error, "413": error, "422": error, "503": error, "504": error},
            },
            "get": {
                "summary": "List tickets (paged)",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in Status]}},
                    {"name": "member", "in": "query", "schema": {"type": "string"}},
                    {"name": "sla_status", "in": "query", "schema": {"type": "string", "enum": list(SLA_STATES)}},
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {"200": {"description": "a page of tickets"}, "422": error},
            },
        },
        "/api/tickets/{ticket_id}": {
            "get": {
                "summary": "A ticket with its SLA clocks",
                "parameters": [{"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": ticket, "404": error},
            }
        },
        "/api/tickets/{ticket_id}/dispute-file": {
            "get": {
                "summary": "The ticket's dispute file, replayed from the SQL archive (staff only)",
                "parameters": [
                    {"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "format", "in": "query",
                     "schema": {"type": "string", "enum": ["json", "md", "html", "pdf"], "default": "json"}},
                ],
                "responses": {"200": {"description": "the dispute file (schema slaledger.dispute-file/1 in JSON)"},
                              "403": error, "404": error, "422": error},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness (tables recovered)",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
    }
    for action, command_type in ACTIONS.items():
        paths[f"/api/tickets/{{ticket_id}}/{action}"] = {
            "post": {
                "summary": f"{action.replace('-', ' ').capitalize()} a ticket",
                "parameters": [{"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}},
                               retry_key],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": _schema_for(COMMAND_EVENT[command_type], "occurred_at")}}},
                "responses": {"200": ticket, "404": error, "409": error, "413": error, "422": error,
                              "503": error, "504": error},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "slaledger", "version": "0.1.0",
                 "description": f"Tickets and SLA clocks. Kinds: {', '.join(KINDS)}. "
                                f"SLA states: {', '.join(s.value for s in ClockStatus)}."},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}, "code": {"type": "string"}}}},
        },
    }
