"""The ticket state machine: commands are decided against the current state.

State diagram (a command not drawn here is refused with a ``DomainError`` that says why)::

                 file                 acknowledge
    (nothing) ─────────► open ─────────────────────► in_progress ◄──────────────┐
                          │                            │  ▲   │                  │
                          │ customer_response          │  │   │ wait_for_customer│
                          │ reclassify                 │  │   ▼                  │
                          └──(stays open)              │  └── waiting_for_customer
                                                       │   customer_response
                            resolve (from in_progress  │
                            or waiting_for_customer)   ▼
                                                    resolved ──reopen──► in_progress
                                                       │
                                                 close │
                                                       ▼
                                                    closed  (final: nothing more)

``inform`` is accepted in in_progress and waiting_for_customer (it changes no state),
``reclassify`` in open, in_progress and waiting_for_customer, ``customer_response`` in
open, in_progress and waiting_for_customer (it ends the wait). SLA facts (warning,
breach, retraction) are not commands: they are recorded on any state.

``Ticket.apply`` never refuses an event: the log is the truth and a fold must be total.
Validation happens once, in ``decide``, before the events exist. ``Ticket`` keeps only
what the clocks need (``marks``), not whole events, so a worker can hold many open
tickets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

from . import french
from .catalogue import Catalogue, UnknownName
from .errors import PolicyError
from .events import (
    SLA_FACT_TYPES,
    Event,
    EventDecodeError,
    EventType,
    format_instant,
    format_optional_instant,
    new_event,
    parse_instant,
)
from .policy import Policy, PolicyVersion


class Status(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_FOR_CUSTOMER = "waiting_for_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"


class CommandType(StrEnum):
    FILE = "file"
    ACKNOWLEDGE = "acknowledge"
    INFORM = "inform"
    WAIT_FOR_CUSTOMER = "wait_for_customer"
    CUSTOMER_RESPONSE = "customer_response"
    RECLASSIFY = "reclassify"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"


COMMAND_EVENT = {
    CommandType.FILE: EventType.TICKET_FILED,
    CommandType.ACKNOWLEDGE: EventType.ACKNOWLEDGED,
    CommandType.INFORM: EventType.CUSTOMER_INFORMED,
    CommandType.WAIT_FOR_CUSTOMER: EventType.WAITING_FOR_CUSTOMER,
    CommandType.CUSTOMER_RESPONSE: EventType.CUSTOMER_RESPONDED,
    CommandType.RECLASSIFY: EventType.RECLASSIFIED,
    CommandType.RESOLVE: EventType.RESOLVED,
    CommandType.CLOSE: EventType.CLOSED,
    CommandType.REOPEN: EventType.REOPENED,
}

# A ticket's statuses before its resolution: the queue, the open-ticket metrics.
OPEN_STATUSES = (Status.OPEN.value, Status.IN_PROGRESS.value, Status.WAITING_FOR_CUSTOMER.value)

_ALLOWED: dict[CommandType, frozenset[Status]] = {
    CommandType.ACKNOWLEDGE: frozenset({Status.OPEN}),
    CommandType.INFORM: frozenset({Status.IN_PROGRESS, Status.WAITING_FOR_CUSTOMER}),
    CommandType.WAIT_FOR_CUSTOMER: frozenset({Status.IN_PROGRESS}),
    CommandType.CUSTOMER_RESPONSE: frozenset({Status.OPEN, Status.IN_PROGRESS, Status.WAITING_FOR_CUSTOMER}),
    CommandType.RECLASSIFY: frozenset({Status.OPEN, Status.IN_PROGRESS, Status.WAITING_FOR_CUSTOMER}),
    CommandType.RESOLVE: frozenset({Status.IN_PROGRESS, Status.WAITING_FOR_CUSTOMER}),
    CommandType.CLOSE: frozenset({Status.RESOLVED}),
    CommandType.REOPEN: frozenset({Status.RESOLVED}),
}


def commands_allowed(status: Status) -> tuple[CommandType, ...]:
    """What may be done to a ticket in ``status`` (filing aside): the ticket page offers these
    and nothing else; ``decide`` still has the last word (dates, reclassification)."""
    return tuple(c for c in CommandType if status in _ALLOWED.get(c, frozenset()))


_STATUS_FR = {
    Status.OPEN: "ouvert, pas encore pris en compte",
    Status.IN_PROGRESS: "en cours de traitement",
    Status.WAITING_FOR_CUSTOMER: "en attente d'une réponse du demandeur",
    Status.RESOLVED: "résolu",
    Status.CLOSED: "clos",
}

_COMMAND_FR = {
    CommandType.ACKNOWLEDGE: "prendre en compte",
    CommandType.INFORM: "informer le demandeur sur",
    CommandType.WAIT_FOR_CUSTOMER: "mettre en attente du demandeur",
    CommandType.CUSTOMER_RESPONSE: "enregistrer une réponse du demandeur sur",
    CommandType.RECLASSIFY: "reclasser",
    CommandType.RESOLVE: "résoudre",
    CommandType.CLOSE: "clore",
    CommandType.REOPEN: "rouvrir",
}

_HINT_FR = {
    (CommandType.INFORM, Status.OPEN): " Prenez-le d'abord en compte.",
    (CommandType.WAIT_FOR_CUSTOMER, Status.OPEN): " Prenez-le d'abord en compte.",
    (CommandType.RESOLVE, Status.OPEN): " Prenez-le d'abord en compte.",
    (CommandType.CLOSE, Status.IN_PROGRESS): " Résolvez-le d'abord.",
    (CommandType.CLOSE, Status.WAITING_FOR_CUSTOMER): " Résolvez-le d'abord.",
}

# How far in the future a business time may be (clock skew between desks and servers).
CLOCK_SKEW = timedelta(minutes=5)


class DomainError(Exception):
    """A command that the ticket's current state does not allow.

    ``code`` says why: ``conflict`` (the state forbids it now), ``invalid`` (the command
    itself is wrong), ``not_found`` (no such ticket for this caller); the HTTP layer alone
    turns it into a status code.
    """

    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Command:
    """A request to change a ticket. ``occurred_at`` is when it really happened (a phone
    call taken earlier, an acknowledgement typed in late); ``None`` means "now"."""

    type: CommandType
    ticket_id: str
    actor: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    command_id: uuid.UUID = field(default_factory=uuid.uuid4)
    reply: bool = False  # someone (an HTTP caller) waits for the outcome
    scope_member: str | None = None  # a referent's command: only that member's tickets exist for it
    # When the GIP received it (the API): its recording time, even if the worker decides it
    # later (a backlog must not make a member's filing look dated by them). None: decision time.
    received_at: datetime | None = None


class Mark(NamedTuple):
    """What a clock needs to know of one event: when, which event, and its signals.

    (A named tuple rather than a frozen dataclass: a worker builds millions of them.)
    """

    at: datetime
    seq: int  # position in the ticket's log, to order equal business times stably
    event_id: uuid.UUID
    signals: frozenset[str]


class RecordedFact(NamedTuple):
    event_id: uuid.UUID
    recorded_at: datetime


class Dated(NamedTuple):
    """An event whose business time precedes its recording (by a minute or more): who put
    that date on it, for the « antidaté » flag (``sla.view``, the web page, the dispute file)."""

    event_id: uuid.UUID
    type: EventType
    occurred_at: datetime
    recorded_at: datetime
    actor: str


DATED_AFTER = timedelta(minutes=1)  # finer gaps are transmission delays, not a date put on a fact


def signals_of(event: Event) -> frozenset[str]:
    """The clock signals an event carries (see ``sla.policy.SIGNALS``)."""
    t, p = event.type, event.payload
    if t is EventType.TICKET_FILED:
        return _FILED_COMPLETE if p.get("elements_complete") else _FILED
    if t is EventType.CUSTOMER_INFORMED:
        informed = _INFORMED_ETA if p.get("restoration_eta") is not None else _INFORMED
        return informed | _ANSWERED if p.get("answer") else informed
    if t is EventType.CUSTOMER_RESPONDED:
        return _RESPONDED_COMPLETE if p.get("elements_complete") else _RESPONDED
    return _SIMPLE.get(t, frozenset())


_FILED = frozenset({"filed"})
_FILED_COMPLETE = frozenset({"filed", "elements_complete"})
_INFORMED = frozenset({"informed"})
_INFORMED_ETA = frozenset({"informed", "informed_with_eta"})
_ANSWERED = frozenset({"answered"})  # the message is the answer to the request, not a holding one
_RESPONDED = frozenset({"customer_responded"})
_RESPONDED_COMPLETE = frozenset({"customer_responded", "elements_complete"})
_SIMPLE = {
    EventType.ACKNOWLEDGED: frozenset({"acknowledged"}),
    EventType.WAITING_FOR_CUSTOMER: frozenset({"waiting_for_customer"}),
    EventType.RESOLVED: frozenset({"resolved"}),
    EventType.CLOSED: frozenset({"closed"}),
    EventType.REOPENED: frozenset({"reopened"}),
}


@dataclass(slots=True)
class Ticket:
    """A ticket's current state, folded from its events in log order."""

    ticket_id: str
    status: Status = Status.OPEN
    kind: str = ""
    channel: str = ""
    product: str = ""
    member: str = ""
    subject: str = ""
    filed_at: datetime | None = None
    filed_recorded_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    restoration_eta: datetime | None = None
    last_event_at: datetime | None = None
    version: int = 0  # number of distinct events applied
    marks: list[Mark] = field(default_factory=list)
    # (fact type, sla, deadline) → the recorded fact; deadlines are UTC instants.
    facts: dict[tuple[EventType, str, datetime], RecordedFact] = field(default_factory=dict)
    event_ids: set[int] = field(default_factory=set)  # UUID.int: hashing a UUID object is slow
    dated: list[Dated] = field(default_factory=list)  # events dated before their recording

    @property
    def exists(self) -> bool:
        return self.filed_at is not None

    def apply(self, event: Event) -> bool:
        """Fold one event in; returns False (and changes nothing) if it was already applied."""
        key = event.event_id.int
        if key in self.event_ids:
            return False
        self.event_ids.add(key)
        self.version += 1
        self.last_event_at = event.recorded_at
        t, p = event.type, event.payload
        if t not in SLA_FACT_TYPES and event.recorded_at - event.occurred_at >= DATED_AFTER:
            self.dated.append(Dated(event.event_id, t, event.occurred_at, event.recorded_at, event.actor))
        if t in SLA_FACT_TYPES:
            self.facts[(t, p["sla"], p["deadline"])] = RecordedFact(event.event_id, event.recorded_at)
            return True
        sig = signals_of(event)
        if sig:
            self.marks.append(Mark(event.occurred_at, self.version, event.event_id, sig))
        if t is EventType.TICKET_FILED:
            self.kind, self.channel = p["kind"], p["channel"]
            self.product, self.member, self.subject = p["product"], p["member"], p["subject"]
            self.filed_at, self.filed_recorded_at = event.occurred_at, event.recorded_at
            self.status = Status.OPEN
        elif t is EventType.ACKNOWLEDGED:
            self.acknowledged_at = event.occurred_at
            self.status = Status.IN_PROGRESS
        elif t is EventType.CUSTOMER_INFORMED:
            if p.get("restoration_eta") is not None:
                self.restoration_eta = p["restoration_eta"]
        elif t is EventType.WAITING_FOR_CUSTOMER:
            self.status = Status.WAITING_FOR_CUSTOMER
        elif t is EventType.CUSTOMER_RESPONDED:
            if self.status is Status.WAITING_FOR_CUSTOMER:
                self.status = Status.IN_PROGRESS
        elif t is EventType.RECLASSIFIED:
            self.kind = p.get("kind") or self.kind
            self.product = p.get("product") or self.product
        elif t is EventType.RESOLVED:
            self.resolved_at = event.occurred_at
            self.status = Status.RESOLVED
        elif t is EventType.CLOSED:
            self.closed_at = event.occurred_at
            self.status = Status.CLOSED
        elif t is EventType.REOPENED:
            self.resolved_at = None
            self.status = Status.IN_PROGRESS
        return True

    def has_fact(self, fact_type: EventType, sla: str, deadline: datetime) -> bool:
        return (fact_type, sla, deadline) in self.facts


def fold(events: Iterable[Event], ticket_id: str | None = None) -> Ticket:
    """Fold a ticket's events (in log order) into its state."""
    ticket: Ticket | None = None if ticket_id is None else Ticket(ticket_id)
    for event in events:
        if ticket is None:
            ticket = Ticket(event.ticket_id)
        ticket.apply(event)
    if ticket is None:
        raise ValueError("fold() needs at least one event or a ticket id")
    return ticket


@lru_cache(maxsize=4096)  # asked twice per command by the worker (redelivery check, decision)
def command_event_id(command_id: uuid.UUID) -> uuid.UUID:
    """A redelivered command yields the same event id, so it cannot be applied twice."""
    return uuid.uuid5(command_id, "event")


def hidden_from(ticket: Ticket | None, command: Command) -> bool:
    """Another member's ticket, for a referent's command: it does not exist for them."""
    return command.scope_member is not None and ticket is not None and ticket.member != command.scope_member


def decide(ticket: Ticket | None, command: Command, now: datetime, *,
           policy: Policy | None = None, max_backdate: timedelta | None = None) -> list[Event]:
    """Validate ``command`` against ``ticket`` (None: unknown ticket) and return its events.

    The recording time is always ``now``; a business time may precede it by the limit of the
    ``policy`` version that judges the ticket (for a filing, the one in force at its date;
    ``PolicyVersion.backdate_limit``), or by ``max_backdate`` when given (the iTop connector's
    preview, without a policy); who may date at all is decided at the edge. Under a
    ``policy``, a product named by a filing or a reclassification must be in its catalogue
    (empty: any text), and its event stores the slug: an exclusion is judged on the slug, so
    « Local Trust MPE » typed in full is excluded as ``local-trust-mpe`` is; and a filing must
    be dated where a version can judge it to its end (``PolicyVersion.check_covers``), or no
    clock could ever be computed for it. Without a policy (tests, previews) none of these
    three rules is checked but ``max_backdate``."""
    occurred = command.occurred_at or now
    if occurred.tzinfo is None:
        raise DomainError("La date de l'événement doit préciser son fuseau horaire (ex. +01:00).", "invalid")
    if occurred > now + CLOCK_SKEW:
        raise DomainError("La date de l'événement est dans le futur.", "invalid")
    # never ahead of its recording: a date a few seconds ahead (clocks of desks and servers
    # differ) is the recording time itself
    occurred = min(occurred, now)
    # recorded when the GIP received it (the API's reception), even if decided later
    recorded = min(max(command.received_at or now, occurred), now)
    judging = _judging_version(policy, ticket, occurred)
    if max_backdate is None and judging is not None:
        max_backdate = judging.backdate_limit(command.actor)
    if max_backdate is not None and recorded - occurred > max_backdate:
        raise DomainError(f"La date de l'événement remonte à plus de {french.span(max_backdate)} avant son "
                          "enregistrement : la politique ne permet pas de dater un fait aussi loin.", "invalid")

    if command.type is CommandType.FILE:
        if ticket is not None and ticket.exists:
            raise DomainError(f"Le ticket {command.ticket_id} existe déjà.", "conflict")
    else:
        if ticket is None or not ticket.exists or hidden_from(ticket, command):
            raise DomainError(f"Le ticket {command.ticket_id} n'existe pas.", "not_found")
        if ticket.status is Status.CLOSED:
            raise DomainError(
                f"Impossible de {_COMMAND_FR[command.type]} le ticket {ticket.ticket_id} : il est clos, "
                "plus aucune action n'est possible.",
                "conflict",
            )
        if ticket.status not in _ALLOWED[command.type]:
            raise DomainError(
                f"Impossible de {_COMMAND_FR[command.type]} le ticket {ticket.ticket_id} : il est "
                f"{_STATUS_FR[ticket.status]}.{_HINT_FR.get((command.type, ticket.status), '')}",
                "conflict",
            )
        assert ticket.filed_at is not None
        if occurred < ticket.filed_at:
            raise DomainError("La date de l'événement précède le dépôt du ticket.", "invalid")

    payload = _with_product_slug(command.payload, policy.products) if policy and policy.products else command.payload
    if ticket is not None and command.type is CommandType.RECLASSIFY:
        kind, product = payload.get("kind"), payload.get("product")
        if (kind in (None, ticket.kind)) and (product in (None, ticket.product)):
            raise DomainError("Le reclassement ne change ni le type ni le produit du ticket.", "invalid")

    try:
        event = new_event(
            COMMAND_EVENT[command.type],
            command.ticket_id,
            occurred_at=occurred,
            recorded_at=recorded,
            actor=command.actor,
            payload=payload,
            event_id=command_event_id(command.command_id),
        )
    except EventDecodeError as exc:
        raise DomainError(str(exc), "invalid") from None
    if policy is not None and command.type is CommandType.FILE:
        try:
            policy.version_for(occurred).check_covers(occurred)
        except PolicyError as exc:
            raise DomainError(str(exc), "invalid") from None
    return [event]


def _judging_version(policy: Policy | None, ticket: Ticket | None, occurred: datetime) -> PolicyVersion | None:
    """The policy version that judges the ticket: the one in force at its filing (for a
    filing, at the date it gives). None without a policy, or when no version is in force
    then: a filing is refused for that at the end of ``decide``, after the checks of the
    command itself, so that their answers come first."""
    if policy is None:
        return None
    at = ticket.filed_at if ticket is not None and ticket.filed_at is not None else occurred
    try:
        return policy.version_for(at)
    except PolicyError:
        return None


def _with_product_slug(payload: Mapping[str, Any], products: Catalogue) -> Mapping[str, Any]:
    """``payload`` with its product (if it names one) as the catalogue's slug; an unknown
    product is refused with the closest names."""
    named = payload.get("product")
    if not isinstance(named, str) or not named:
        return payload  # none (a reclassification of the kind only), or a type the schema refuses
    try:
        slug = products.resolve(named)
    except UnknownName as exc:
        raise DomainError(exc.message, "invalid") from None
    return payload if slug == named else {**payload, "product": slug}


# --- storage form (Faust table values, snapshots) -----------------------------------------
# A snapshot outlives the code that wrote it (RocksDB, the changelog, the SQL read model):
# it carries its schema version, and ``upcast_snapshot`` brings an older one to today's
# shape before it is read, as events are upcast (``sla.events``).
#   1 — unversioned, until 2026-11: refused commands kept with their HTTP status.
#   2 — ``schema`` key; refused commands kept with the domain's result code.
#   3 — ``dated``: the events dated before their recording, with who dated them (a schema 2
#       snapshot knows none: a ticket rebuilt from the log has them).
SNAPSHOT_SCHEMA = 3
_STATUS_RESULT = {200: "accepted", 201: "created", 404: "not_found", 409: "conflict", 422: "invalid"}


def upcast_snapshot(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored snapshot in today's shape (``SNAPSHOT_SCHEMA``), whatever version wrote it."""
    out = dict(data)
    version = int(out.get("schema", 1))
    if version > SNAPSHOT_SCHEMA:
        raise ValueError(f"ticket snapshot schema {version} is newer than this code ({SNAPSHOT_SCHEMA})")
    if version < 2:
        out["refused"] = {cid: [_STATUS_RESULT.get(int(status), "conflict"), body]
                          for cid, (status, body) in out.get("refused", {}).items()}
        out["schema"] = 2
    if int(out["schema"]) < 3:
        out["dated"] = []
        out["schema"] = 3
    return out


def ticket_to_dict(ticket: Ticket) -> dict[str, Any]:
    """A JSON-ready form of the state; ``ticket_from_dict`` reads it back exactly."""

    return {
        "schema": SNAPSHOT_SCHEMA,
        "ticket_id": ticket.ticket_id,
        "status": str(ticket.status),
        "kind": ticket.kind,
        "channel": ticket.channel,
        "product": ticket.product,
        "member": ticket.member,
        "subject": ticket.subject,
        "filed_at": format_optional_instant(ticket.filed_at),
        "filed_recorded_at": format_optional_instant(ticket.filed_recorded_at),
        "acknowledged_at": format_optional_instant(ticket.acknowledged_at),
        "resolved_at": format_optional_instant(ticket.resolved_at),
        "closed_at": format_optional_instant(ticket.closed_at),
        "restoration_eta": format_optional_instant(ticket.restoration_eta),
        "last_event_at": format_optional_instant(ticket.last_event_at),
        "version": ticket.version,
        "marks": [[format_instant(m.at), m.seq, m.event_id.hex, sorted(m.signals)] for m in ticket.marks],
        "facts": [
            [str(t), sla, format_instant(deadline), fact.event_id.hex, format_instant(fact.recorded_at)]
            for (t, sla, deadline), fact in ticket.facts.items()
        ],
        "event_ids": [format(i, "032x") for i in sorted(ticket.event_ids)],
        "dated": [[d.event_id.hex, str(d.type), format_instant(d.occurred_at), format_instant(d.recorded_at), d.actor]
                  for d in ticket.dated],
    }


def ticket_from_dict(data: Mapping[str, Any]) -> Ticket:
    def instant(value: str | None) -> datetime | None:
        return parse_instant(value, "ticket") if value is not None else None

    data = upcast_snapshot(data)
    ticket = Ticket(
        ticket_id=data["ticket_id"],
        status=Status(data["status"]),
        kind=data["kind"],
        channel=data["channel"],
        product=data["product"],
        member=data["member"],
        subject=data["subject"],
        filed_at=instant(data["filed_at"]),
        filed_recorded_at=instant(data["filed_recorded_at"]),
        acknowledged_at=instant(data["acknowledged_at"]),
        resolved_at=instant(data["resolved_at"]),
        closed_at=instant(data["closed_at"]),
        restoration_eta=instant(data["restoration_eta"]),
        last_event_at=instant(data["last_event_at"]),
        version=data["version"],
    )
    ticket.marks = [
        Mark(parse_instant(at, "mark"), seq, uuid.UUID(hex=eid), frozenset(signals))
        for at, seq, eid, signals in data["marks"]
    ]
    ticket.facts = {
        (EventType(t), sla, parse_instant(deadline, "fact")): RecordedFact(
            uuid.UUID(hex=eid), parse_instant(recorded, "fact")
        )
        for t, sla, deadline, eid, recorded in data["facts"]
    }
    ticket.event_ids = {int(h, 16) for h in data["event_ids"]}
    ticket.dated = [Dated(uuid.UUID(hex=eid), EventType(t), parse_instant(occurred, "dated"),
                          parse_instant(recorded, "dated"), actor)
                    for eid, t, occurred, recorded, actor in data["dated"]]
    return ticket
