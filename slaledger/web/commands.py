"""The web's command path, one for the JSON API and the pages' forms: who may send what, a
request body made a domain command, and the one mapping of what sending it gives (the
agent's outcome, or none) to an HTTP status and the words of each surface.

A body is validated strictly first (unknown fields, wrong types → ``BadRequest`` 422 naming
the field; nothing is sent), then the command goes to the commands topic keyed by ticket id
and the caller awaits the ticket agent's outcome (201/200 with the ticket, or 404/409/422
with the domain's French error).

Retries. A command sent with an idempotency key (the API's ``Idempotency-Key`` header, a
form's hidden key) gets a command id derived from the key, the caller's token, the action,
the ticket and the body (and a filing gets a ticket id derived from the key and the token):
sent again after a cut connection, a 504 or a crash, it is the same command, which the agent
recognises in the ticket's state and answers again (``"replayed": true``) without applying
it twice. Without a key every request is a new command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from sla.catalogue import Catalogue, UnknownName
from sla.events import PAYLOAD_SCHEMAS, EventDecodeError, parse_instant, validate_payload
from sla.ticket import COMMAND_EVENT, Command, CommandType

from .access import BadRequest
from .ports import CommandUnavailable, NoOutcome, OwnerChanged, Ports, Principal

log = structlog.get_logger(__name__)

# The action words of ``/api/tickets/{id}/{action}`` and of the ticket page's forms.
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

_IDEMPOTENCY_NAMESPACE = uuid.UUID("7d0c6f5e-1b2a-5c3d-9e8f-a1b2c3d4e5f6")
_TICKET_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


# --- idempotency -------------------------------------------------------------------------------

def new_ticket_id(seed: str | None = None) -> str:
    """Short, unambiguous, URL-safe: « SL-7K2M9QX4PA ». Random, or derived from ``seed``
    (an idempotency key and its caller: a retried filing names the same ticket)."""
    if seed is None:
        return "SL-" + "".join(secrets.choice(_TICKET_ALPHABET) for _ in range(10))
    digest = hashlib.sha256(seed.encode()).digest()
    return "SL-" + "".join(_TICKET_ALPHABET[b % len(_TICKET_ALPHABET)] for b in digest[:10])


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


# --- a body made a command ---------------------------------------------------------------------

def filing_command(body: Any, who: Principal, key: str | None, members: Catalogue | None) -> Command:
    """A new ticket's filing (``command_from_body`` of ``FILE``), under a ticket id derived
    from the idempotency ``key`` when there is one."""
    ticket_id = new_ticket_id(key_scope(who, key) if key is not None else None)
    return command_from_body(CommandType.FILE, ticket_id, body, who, key, members)


def command_from_body(command_type: CommandType, ticket_id: str, body: Any, who: Principal,
                      key: str | None = None, members: Catalogue | None = None) -> Command:
    """Validate a request body strictly and build the command (raises BadRequest 4xx);
    its id derives from the idempotency ``key`` when there is one. A filing's member must be
    in the ``members`` directory (by id or name; the command carries the id); the product is
    the domain's to check (the policy's catalogue, ``sla.ticket.decide``).

    A referent's commands are scoped to their member: another member's ticket does not
    exist for them (404, decided by the ticket agent), and they file for their own member.
    """
    if not who.sends_commands:
        raise BadRequest(403, f"le rôle {who.role} n'envoie aucune commande")
    if not who.may_send(command_type):
        raise BadRequest(403, "un référent dépose des demandes et y répond ; les autres actions sont celles de "
                              "l'équipe support")
    if not isinstance(body, dict):
        raise BadRequest(422, "le corps de la requête doit être un objet JSON")
    if who.referent and command_type is CommandType.FILE:
        body = _own_member(body, who, members)
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
        payload["member"] = _member_id(members, payload["member"])
    # Business time defaults to the moment the request arrived, not when the agent gets to it;
    # that moment is also the fact's recording time.
    received = datetime.now(UTC)
    occurred: datetime | None = received
    if body.get(time_field) is not None:
        if not who.dates_facts:
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
    scope = who.member if who.referent else None
    command_id = keyed_command_id(key, who, command_type, ticket_id, body) if key is not None else uuid.uuid4()
    return Command(command_type, ticket_id, who.actor, payload, occurred, command_id, reply=True,
                   scope_member=scope, received_at=received)


def _member_id(members: Catalogue, typed: str) -> str:
    """The directory's id of a member named by its id, name or an alias (422 otherwise)."""
    try:
        return members.resolve(typed)
    except UnknownName as exc:
        raise BadRequest(422, exc.message, "member") from None


def _own_member(body: dict[str, Any], who: Principal, members: Catalogue | None) -> dict[str, Any]:
    """A referent's filing, for their own member (403 for another; its name names it too)."""
    typed = body.get("member", who.member)
    if members and isinstance(typed, str):
        typed = _member_id(members, typed)
    own = who.member
    if members and own:
        with contextlib.suppress(UnknownName):  # a member the directory lacks: refused later (422)
            own = members.resolve(own)
    if typed not in (own, who.member):
        raise BadRequest(403, "un référent ne dépose de demandes que pour son propre membre", "member")
    return {**body, "member": who.member}


# --- sending -----------------------------------------------------------------------------------

# The agent's outcomes as HTTP answers: the one place a domain result becomes a status code.
RESULT_STATUS = {"created": 201, "accepted": 200, "not_found": 404, "conflict": 409, "invalid": 422}


@dataclass(frozen=True)
class Unanswered:
    """Why a command got no outcome: its status, what the API says, what a page says."""

    status: int
    api: str
    page: str


STARTING = Unanswered(503, "service en cours de démarrage, réessayez dans un instant",
                      "Le service démarre : réessayez dans un instant.")
LOG_UNAVAILABLE = Unanswered(503, "journal des événements indisponible ; réessayez dans un instant (avec la même "
                                  "Idempotency-Key si vous en avez envoyé une)",
                             "Le journal des événements est indisponible : réessayez dans un instant.")
OWNER_CHANGED = Unanswered(503, "le serveur qui traitait ce ticket a changé ; réessayez avec la même Idempotency-Key "
                                "(la commande a peut-être déjà été enregistrée : la même clé ne la doublera pas)",
                           "Le serveur qui traitait ce ticket a changé : elle a peut-être été enregistrée. Renvoyer "
                           "ce formulaire tel quel ne la doublera pas.")
NO_OUTCOME = Unanswered(504, "pas de réponse à temps ; la commande peut encore être appliquée",
                        "Pas de réponse à temps : elle a peut-être été enregistrée. Renvoyer ce formulaire tel "
                        "quel ne la doublera pas.")


@dataclass(frozen=True)
class Sent:
    """What sending a command gave: the HTTP status, the API's JSON body (the outcome's, or
    the error with the command id to retry with), and a page's French refusal ("" if none)."""

    status: int
    body: dict[str, Any]
    refusal: str

    @property
    def accepted(self) -> bool:
        return self.status < 300


async def send(ports: Ports, command: Command) -> Sent:
    """Send ``command`` and await the ticket agent's outcome."""
    cid = str(command.command_id)
    if not ports.commands.accepting:  # nothing sent: no command id to retry with
        return Sent(STARTING.status, {"error": STARTING.api}, STARTING.page)
    try:
        outcome = await ports.commands.submit(command)
    except OwnerChanged:
        return _unanswered(OWNER_CHANGED, cid)
    except CommandUnavailable:
        return _unanswered(LOG_UNAVAILABLE, cid)
    except NoOutcome:
        return _unanswered(NO_OUTCOME, cid)
    status = RESULT_STATUS[outcome.result]
    log.info("command answered", ticket_id=command.ticket_id, command_id=cid, command=str(command.type),
             status=status, actor=command.actor)
    return Sent(status, outcome.body, str(outcome.body.get("error", "")))


def _unanswered(why: Unanswered, command_id: str) -> Sent:
    return Sent(why.status, {"error": why.api, "command_id": command_id}, why.page)
