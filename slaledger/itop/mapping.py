"""iTop mapping (pure): one UserRequest or Incident snapshot → the ticket commands it stands for.

``translate`` gives the commands the HTTP API would have sent (file, acknowledge, inform,
wait for customer, customer response, resolve, reopen, close), simulated through
``sla.ticket.decide`` so only what the state machine accepts is sent.

Why it never duplicates: every command id is ``uuid5(ref | field | iTop timestamp)``, the
agent derives the event id from the command id, and a command whose event the ticket
already holds is dropped (``TicketProcessor.on_command``). Re-polling an overlapping
window, restarting, or losing the checkpoint re-sends the same ids, never new events.

Business time is iTop's own time (its "Y-m-d H:i:s", local to the iTop server, Europe/Paris
by default), never the time of the poll.
"""

from __future__ import annotations

import hashlib
import html
import re
import tomllib
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sla.catalogue import Catalogue, UnknownName
from sla.events import CONTROL_CHARACTERS, KINDS, validate_ticket_id
from sla.ticket import Command, CommandType, DomainError, Status, Ticket, decide

from .client import ItopObject, StatusChange, parse_itop_time

ORIGIN_CHANNEL = {"portal": "portal", "phone": "phone", "mail": "email",
                  # raised by the team's own monitoring, not filed by a member: no portal intake clock
                  "monitoring": "email",
                  # iTop 3.1+: a desk visit and a chat reach an agent live, as a call does (the
                  # domain knows portal, phone and e-mail only; the intake clock, for requests
                  # nobody has seen yet, runs on the portal's alone)
                  "in_person": "phone", "chat": "phone"}
REQUEST_TYPE_KIND = {"incident": "incident", "service_request": "assistance"}
ACTIVE_STATUSES = frozenset({"new", "escalated_tto", "assigned", "escalated_ttr", "waiting_for_approval",
                             "approved", "pending", "dispatched", "redispatched"})
UNKNOWN_MEMBER = "inconnu"
UNKNOWN_PRODUCT = "non-renseigne"

_NAMESPACE = uuid.UUID("3d1f7c52-9b0e-5a4f-8c6d-1e2a3b4c5d6e")


# --- the mapping (pure) ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ServiceTarget:
    product: str
    kind: str | None = None  # e.g. a "go-live" service; None: from the class / request_type


@dataclass(frozen=True)
class Reference:
    """Which iTop organisations and services we know, and their member and product ids.

    Without a file (``known`` False) names are slugified ("Commune de Blois" →
    ``commune-de-blois``) and only missing values are reported; with one, any name absent
    from it is reported as unknown, and still ingested under its slug.
    """

    organisations: Mapping[str, str] = field(default_factory=dict)
    services: Mapping[str, ServiceTarget] = field(default_factory=dict)
    known: bool = False
    # The members directory and the policy's products catalogue, when known: an object whose
    # organisation or service names none of them (through the map above, or by its own name)
    # is not sent but dead-lettered with the reason (``Translation.refused``).
    members: Catalogue | None = None
    products: Catalogue | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Reference:
        """A TOML file: ``[organisations] "Commune de Blois" = "commune-de-blois"`` and
        ``[services] "Parapheur" = "parapheur"`` or ``= { product = "ent", kind = "go_live" }``."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
        unknown = sorted(set(raw) - {"organisations", "services"})
        if unknown:
            raise ValueError(f"{path}: unknown table(s) {', '.join(unknown)}; expected [organisations] and [services]")
        orgs: dict[str, str] = {}
        for name, member in raw.get("organisations", {}).items():
            if not isinstance(member, str) or not member.strip():
                raise ValueError(f"{path}: organisations.{name!r} must be a member id")
            orgs[name] = member.strip()
        services: dict[str, ServiceTarget] = {}
        for name, target in raw.get("services", {}).items():
            if isinstance(target, str) and target.strip():
                services[name] = ServiceTarget(target.strip())
            elif isinstance(target, dict) and isinstance(target.get("product"), str) and target["product"].strip():
                kind = target.get("kind")
                if kind is not None and kind not in KINDS:
                    raise ValueError(f"{path}: services.{name!r}.kind must be one of {', '.join(KINDS)}")
                services[name] = ServiceTarget(target["product"].strip(), kind)
            else:
                raise ValueError(f"{path}: services.{name!r} must be a product id or {{ product = …, kind = … }}")
        return cls(orgs, services, known=True)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A value we could not map (reported, never a reason to drop the ticket)."""

    what: str  # organisation | service | origin | request_type
    value: str
    ref: str
    ticket_id: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """An iTop transition the state machine refuses (e.g. a public message before the
    ticket was taken into account): not sent, so it does not go to the dead letters."""

    field: str
    stamp: str
    command: str
    reason: str
    retry: bool = False  # refused for now only (a time ahead of our clock): re-read next pass


@dataclass
class Translation:
    ticket_id: str
    ref: str
    commands: list[Command] = field(default_factory=list)
    unknown: list[Unknown] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # Why the object is refused (an unknown member or product, French); ``commands`` then holds
    # its filing alone, for the dead letter: nothing is sent.
    refused: str = ""


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:128]


def _known_names(reference: Reference, member: str, org: str, product: str,
                 service: str) -> tuple[str, str, str]:
    """(member id, product slug, why refused): the mapped (or slugified) names resolved in the
    members directory and the products catalogue when known; an organisation or a service
    named in neither (by the map or by its own iTop name) is refused with the closest names."""
    reasons: list[str] = []

    def resolve(catalogue: Catalogue | None, mapped: str, named: str) -> str:
        if not catalogue:
            return mapped
        try:  # the map's id (or the slug) when the catalogue has it, else iTop's own name
            return catalogue.resolve(mapped if mapped in catalogue or not named else named)
        except UnknownName as exc:
            reasons.append(exc.message)
            return mapped

    return resolve(reference.members, member, org), resolve(reference.products, product, service), " ".join(reasons)


def ticket_id_for(itop_class: str, key: str, ref: str | None) -> str:
    """``R-000123`` → ``IT-R-000123``: stable, readable, and within the ticket-id rules."""
    base = ref or f"{itop_class}-{key}"
    candidate = "IT-" + re.sub(r"[^A-Za-z0-9._:-]", "-", base)
    return validate_ticket_id(candidate[:64])


def command_id_for(ref: str, what: str, stamp: str, extra: str = "") -> uuid.UUID:
    """The same iTop fact always gives the same command id, hence the same event id."""
    return uuid.uuid5(_NAMESPACE, f"itop|{ref}|{what}|{stamp}|{extra}")


def html_to_text(value: Any) -> str:
    """iTop 3 HTML fields (description, solution) as the plain text our events carry."""
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</li>", "\n", str(value or ""))
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", plain(text))).strip()


def plain(text: str) -> str:
    """Control characters (a vertical tab pasted from a word processor) as spaces: events
    refuse them, and a refused filing would lose the whole ticket."""
    return CONTROL_CHARACTERS.sub(" ", text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Fact:
    at: datetime
    order: int  # ties at the same second: the order a person would have done them in
    what: str  # the iTop field it comes from (part of the command id)
    stamp: str  # the raw iTop timestamp (part of the command id)
    command: CommandType
    payload: Mapping[str, Any]
    extra: str = ""


# A reopening comes first at its second: what the team or the caller did then happened on
# the reopened ticket. "Leaving pending" (6) follows anything else recorded at that second.
_ORDER = {CommandType.FILE: 0, CommandType.ACKNOWLEDGE: 1, CommandType.REOPEN: 2, CommandType.INFORM: 3,
          CommandType.WAIT_FOR_CUSTOMER: 4, CommandType.CUSTOMER_RESPONSE: 5, CommandType.RESOLVE: 7,
          CommandType.CLOSE: 8}
_PENDING_END = 6
_NEEDS_TAKING_IN = frozenset({CommandType.INFORM, CommandType.WAIT_FOR_CUSTOMER, CommandType.RESOLVE})


def _log_entries(value: Any) -> list[dict[str, Any]]:
    entries = value.get("entries") if isinstance(value, dict) else None
    return [e for e in entries or [] if isinstance(e, dict) and e.get("date")]


def translate(obj: ItopObject, reference: Reference, *, actor: str, tz: ZoneInfo, now: datetime,
              max_backdate: timedelta | None = None, changes: Sequence[StatusChange] | None = None) -> Translation:
    """The commands one iTop snapshot stands for, in business-time order.

    start_date → file; assignment_date → acknowledge; public log entries → inform (by the
    team) or customer response (by the caller). The status transitions come from iTop's
    change log when ``changes`` holds it (every transition with its own date: entering
    pending → wait for customer; leaving it → customer response; resolved → resolve;
    rejected → the rejection; resolved then active again → reopen; closed → close).
    Without it (``None`` or empty: older history purged, no right to read it) they are
    inferred from the snapshot's dates (last_pending_date, resolution_date, close_date,
    last_update), which keep only the last of each. The list is replayed through
    ``decide`` on a local ticket: what the state machine refuses is reported in
    ``skipped``, not sent.
    """
    f = obj.fields
    ref = obj.ref
    tid = ticket_id_for(obj.itop_class, obj.key, f.get("ref") or None)
    out = Translation(tid, ref)

    def when(name: str) -> tuple[datetime | None, str]:
        raw = f.get(name)
        try:
            return parse_itop_time(raw, tz), str(raw or "")
        except ValueError as exc:
            out.skipped.append(Skipped(name, str(raw), "-", str(exc)))
            return None, ""

    start, start_raw = when("start_date")
    if start is None:
        out.skipped.append(Skipped("start_date", start_raw, str(CommandType.FILE), "pas de date de dépôt"))
        return out

    def unknown(what: str, value: str) -> None:
        out.unknown.append(Unknown(what, value, ref, tid))

    org = str(f.get("org_name") or "").strip()
    if not org:
        unknown("organisation", "")
        member = UNKNOWN_MEMBER
    elif org in reference.organisations:
        member = reference.organisations[org]
    else:
        member = slugify(org) or UNKNOWN_MEMBER
        if reference.known:
            unknown("organisation", org)
    service = str(f.get("service_name") or "").strip()
    target = reference.services.get(service) if service else None
    if target is not None:
        product = target.product
    else:
        product = (slugify(service) if service else "") or UNKNOWN_PRODUCT
        if not service or reference.known:
            unknown("service", service)
    origin = str(f.get("origin") or "")
    channel = ORIGIN_CHANNEL.get(origin)
    if channel is None:
        unknown("origin", origin)
        channel = "email"  # not the portal: no intake clock on a guess
    if obj.itop_class == "Incident":
        kind = "incident"
    else:
        request_type = str(f.get("request_type") or "")
        kind = REQUEST_TYPE_KIND.get(request_type, "")
        if not kind:
            unknown("request_type", request_type)
            kind = "assistance"
    if target is not None and target.kind:
        kind = target.kind

    member, product, out.refused = _known_names(reference, member, org, product, service)
    filing: dict[str, Any] = {"kind": kind, "channel": channel, "product": product[:128], "member": member[:128],
                              "subject": _clip(plain(str(f.get("title") or "")).strip() or ref, 500)}
    description = _clip(html_to_text(f.get("description")), 10_000)
    if description:
        filing["description"] = description
    if out.refused:
        out.commands.append(Command(CommandType.FILE, tid, actor, filing, occurred_at=start,
                                    command_id=command_id_for(ref, "start_date", start_raw)))
        return out
    facts = [_Fact(start, 0, "start_date", start_raw, CommandType.FILE, filing)]

    assigned, assigned_raw = when("assignment_date")
    if assigned is not None:
        facts.append(_Fact(assigned, 1, "assignment_date", assigned_raw, CommandType.ACKNOWLEDGE, {}))

    caller = str(f.get("caller_id_friendlyname") or "").strip()
    entries: list[tuple[datetime, str, bool]] = []  # (at, raw, by the caller)
    for entry in _log_entries(f.get("public_log")):
        try:
            at = parse_itop_time(entry["date"], tz)
        except ValueError as exc:
            out.skipped.append(Skipped("public_log", str(entry["date"]), "-", str(exc)))
            continue
        if at is None:
            continue
        message = _clip(str(entry.get("message") or html_to_text(entry.get("message_html"))).strip(), 10_000)
        if not message:
            continue
        author = str(entry.get("user_login") or "").strip()
        by_caller = bool(caller) and author == caller
        digest = hashlib.sha256(message.encode()).hexdigest()[:16]
        extra = f"{entry.get('user_id', '')}:{digest}"
        raw = str(entry["date"])
        entries.append((at, raw, by_caller))
        if by_caller:
            facts.append(_Fact(at, _ORDER[CommandType.CUSTOMER_RESPONSE], "public_log", raw,
                               CommandType.CUSTOMER_RESPONSE, {"elements_complete": False, "message": message}, extra))
        else:
            facts.append(_Fact(at, _ORDER[CommandType.INFORM], "public_log", raw, CommandType.INFORM,
                               {"message": message}, extra))

    status = str(f.get("status") or "")
    last_update, _ = when("last_update")
    pending, pending_raw = when("last_pending_date")
    resolved, resolved_raw = when("resolution_date")
    closed, closed_raw = when("close_date")
    reason = _clip(html_to_text(f.get("pending_reason")), 10_000)
    solution = _clip(html_to_text(f.get("solution")), 10_000)
    logged = _from_change_log(changes or (), out, tz, entries, snapshot={
        "last_pending_date": (pending, pending_raw), "resolution_date": (resolved, resolved_raw),
        "close_date": (closed, closed_raw)}, reason=reason, solution=solution)
    if logged is not None:
        facts += logged
        # A date the log does not cover (history purged, a change made without tracking) still counts.
        covered = {(x.what, x.stamp) for x in logged}
        for name, at, raw, command, payload in (
                ("last_pending_date", pending, pending_raw, CommandType.WAIT_FOR_CUSTOMER,
                 {"reason": reason} if reason else {}),
                ("resolution_date", resolved, resolved_raw, CommandType.RESOLVE,
                 {"resolution": solution} if solution else {}),
                ("close_date", closed, closed_raw, CommandType.CLOSE, {})):
            if at is not None and (name, raw) not in covered:
                facts.append(_Fact(at, _ORDER[command], name, raw, command, payload))
    else:
        facts += _from_snapshot(status, last_update, entries, pending, pending_raw, resolved, resolved_raw,
                                closed, closed_raw, reason, solution)

    _simulate(out, sorted(facts, key=lambda x: (x.at, x.order)), actor, now, derive_ack=assigned is None,
              max_backdate=max_backdate)
    return out


# Statuses after which a ticket waits for nobody: leaving pending for one of them is no reply.
_DONE_STATUSES = frozenset({"resolved", "closed", "rejected"})
# How far a change op's date may be from the snapshot date iTop's lifecycle set in the same
# transition (SetCurrentDate runs in the same request, normally the same second).
_SAME_FACT = timedelta(seconds=5)


def _from_change_log(changes: Sequence[StatusChange], out: Translation, tz: ZoneInfo,
                     entries: list[tuple[datetime, str, bool]], *, snapshot: Mapping[str, tuple[datetime | None, str]],
                     reason: str, solution: str) -> list[_Fact] | None:
    """The status facts from the change log, or ``None`` when there is no log to read.

    Ids stay those of the snapshot inference for the same fact: a change whose date is the
    snapshot's date for that field (within a few seconds) takes the snapshot's time and
    stamp, so a ticket synced by a release that read only snapshots gets no duplicate.
    """
    if not changes:
        return None
    facts: list[_Fact] = []

    def stamp_of(field_name: str, at: datetime, raw: str) -> tuple[datetime, str]:
        known, known_raw = snapshot.get(field_name, (None, ""))
        if known is not None and abs(known - at) <= _SAME_FACT:
            return known, known_raw
        return at, raw

    pending_since: tuple[datetime, str] | None = None  # (when, stamp) of the open pause
    last_resolution = ""
    for change in changes:
        try:
            at = parse_itop_time(change.date, tz)
        except ValueError as exc:
            out.skipped.append(Skipped("status", change.date, "-", str(exc)))
            continue
        if at is None or change.old == change.new:
            continue
        if change.old == "pending" and change.new != "pending" and pending_since is not None:
            began, began_raw = pending_since
            pending_since = None
            answered = any(by_caller and began <= when <= at for when, _raw, by_caller in entries)
            if change.new not in _DONE_STATUSES and not answered:
                facts.append(_Fact(at, _PENDING_END, "pending_end", began_raw, CommandType.CUSTOMER_RESPONSE, {
                    "elements_complete": False,
                    "message": f"Sortie de l'attente dans iTop (statut : {change.new or 'inconnu'})."}))
        if change.old == "resolved" and change.new in ACTIVE_STATUSES and last_resolution:
            facts.append(_Fact(at, _ORDER[CommandType.REOPEN], "reopen", last_resolution, CommandType.REOPEN,
                               {"reason": "Rouvert dans iTop."}))
        if change.new == "pending" and change.old != "pending":
            when_, raw = stamp_of("last_pending_date", at, change.date)
            pending_since = (when_, raw)
            last = raw == snapshot["last_pending_date"][1]
            facts.append(_Fact(when_, _ORDER[CommandType.WAIT_FOR_CUSTOMER], "last_pending_date", raw,
                               CommandType.WAIT_FOR_CUSTOMER, {"reason": reason} if reason and last else {}))
        elif change.new == "resolved":
            when_, raw = stamp_of("resolution_date", at, change.date)
            last_resolution = raw
            last = raw == snapshot["resolution_date"][1]
            facts.append(_Fact(when_, _ORDER[CommandType.RESOLVE], "resolution_date", raw, CommandType.RESOLVE,
                               {"resolution": solution} if solution and last else {}))
        elif change.new == "rejected":
            # One rejection per request, the id the snapshot inference gives it.
            facts.append(_Fact(at, _ORDER[CommandType.RESOLVE], "rejected", "", CommandType.RESOLVE,
                               {"resolution": "Demande rejetée dans iTop."}))
        elif change.new == "closed":
            when_, raw = stamp_of("close_date", at, change.date)
            facts.append(_Fact(when_, _ORDER[CommandType.CLOSE], "close_date", raw, CommandType.CLOSE, {}))
    return facts


def _from_snapshot(status: str, last_update: datetime | None, entries: list[tuple[datetime, str, bool]],
                   pending: datetime | None, pending_raw: str, resolved: datetime | None, resolved_raw: str,
                   closed: datetime | None, closed_raw: str, reason: str, solution: str) -> list[_Fact]:
    """The status facts inferred from the snapshot's dates (no change log to read)."""
    facts: list[_Fact] = []
    if pending is not None:
        facts.append(_Fact(pending, _ORDER[CommandType.WAIT_FOR_CUSTOMER], "last_pending_date", pending_raw,
                           CommandType.WAIT_FOR_CUSTOMER, {"reason": reason} if reason else {}))
        answered = any(by_caller and at >= pending for at, _raw, by_caller in entries)
        resolved_since = resolved is not None and resolved >= pending
        if status != "pending" and not answered and not resolved_since and last_update is not None:
            # iTop keeps no "left pending" date: the last change is the best upper bound we have.
            facts.append(_Fact(max(last_update, pending), _PENDING_END, "pending_end", pending_raw,
                               CommandType.CUSTOMER_RESPONSE, {
                                   "elements_complete": False,
                                   "message": f"Sortie de l'attente dans iTop (statut : {status or 'inconnu'})."}))
    if resolved is not None:
        facts.append(_Fact(resolved, _ORDER[CommandType.RESOLVE], "resolution_date", resolved_raw,
                           CommandType.RESOLVE, {"resolution": solution} if solution else {}))
        if status in ACTIVE_STATUSES:  # resolved, then active again: it was reopened
            later = [at for at, _raw, _c in entries if at > resolved]
            later += [t for t in (pending, last_update) if t is not None and t > resolved]
            if later:
                facts.append(_Fact(min(later), _ORDER[CommandType.REOPEN], "reopen", resolved_raw, CommandType.REOPEN,
                                   {"reason": "Rouvert dans iTop."}))
    elif status == "rejected" and last_update is not None:
        # One rejection per request: its id must not change when last_update moves on.
        facts.append(_Fact(last_update, _ORDER[CommandType.RESOLVE], "rejected", "", CommandType.RESOLVE,
                           {"resolution": "Demande rejetée dans iTop."}))
    if closed is not None:
        facts.append(_Fact(closed, _ORDER[CommandType.CLOSE], "close_date", closed_raw, CommandType.CLOSE, {}))
    return facts


def _simulate(out: Translation, facts: list[_Fact], actor: str, now: datetime, *, derive_ack: bool,
              max_backdate: timedelta | None = None) -> None:
    """Keep the facts the state machine accepts, in order, as commands.

    Without an assignment date (iTop let the ticket skip "assigned"), the team's first
    action (a public message, a pending, a resolution) is when it was taken into account.
    """
    ticket: Ticket | None = None
    for fact in facts:
        command = Command(fact.command, out.ticket_id, actor, dict(fact.payload), occurred_at=fact.at,
                          command_id=command_id_for(out.ref, fact.what, fact.stamp, fact.extra))
        steps = [command]
        if (derive_ack and fact.command in _NEEDS_TAKING_IN and ticket is not None
                and ticket.status is Status.OPEN):
            steps.insert(0, Command(CommandType.ACKNOWLEDGE, out.ticket_id, actor, {
                "note": "Prise en compte déduite de la première action de l'équipe dans iTop."},
                occurred_at=fact.at, command_id=command_id_for(out.ref, "acknowledged", fact.stamp)))
        for step in steps:
            try:
                # the worker's rule: a fact dated beyond the policy's limit is reported, not sent
                events = decide(ticket, step, now, max_backdate=max_backdate)
            except DomainError as exc:
                out.skipped.append(Skipped(fact.what, fact.stamp, str(step.type), exc.message,
                                           retry=exc.code == "invalid" and step.occurred_at is not None
                                           and step.occurred_at > now))
                break
            ticket = ticket if ticket is not None else Ticket(out.ticket_id)
            for event in events:
                ticket.apply(event)
            out.commands.append(step)



__all__ = ["Reference", "translate"]
