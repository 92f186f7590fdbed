"""iTop connector: UserRequest and Incident changes become ticket commands.

Members file on the iTop portal; without this the support team would type every ticket a
second time. ``slaledger itop sync`` polls iTop's REST/JSON API (``core/get``, API version
1.3) for the objects changed since its checkpoint, turns each object's snapshot into the
commands the HTTP API would have sent (file, acknowledge, inform, wait for customer,
customer response, resolve, reopen, close) and publishes them on the commands topic. The
ticket agent, single writer of each ticket, validates them with the state machine as any
other command.

Why it never duplicates: every command id is ``uuid5(ref | field | iTop timestamp)``, the
agent derives the event id from the command id, and a command whose event the ticket
already holds is dropped (``TicketProcessor.on_command``). Re-polling an overlapping
window, restarting, or losing the checkpoint re-sends the same ids, never new events.

Business time is iTop's own time (its "Y-m-d H:i:s", local to the iTop server, Europe/Paris
by default), never the time of the poll. Written for iTop 3.0–3.2 with the ITIL profiles
(``itop-request-mgmt-itil``, ``itop-incident-mgmt-itil``), REST API version 1.3; the
``limit``/``page`` paging of ``core/get`` exists since iTop 3.0 (an older iTop ignores it
and answers everything at once, which the client detects).

Three parts: the client (``ItopClient``), the mapping (``translate``: pure, one snapshot →
commands, simulated through ``sla.ticket.decide`` so only what the state machine accepts
is sent), and the sync (``sync_once``, ``run_once``, ``run_forever``: checkpoint, publish,
back-off).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import time
import tomllib
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine, select

from sla.events import CONTROL_CHARACTERS, KINDS, validate_ticket_id
from sla.ticket import Command, CommandType, DomainError, Status, Ticket, command_event_id, decide

from .processor import encode_command
from .topics import COMMANDS

log = structlog.get_logger(__name__)

API_VERSION = "1.3"
ITOP_CLASSES = ("UserRequest", "Incident")
ITOP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_PAGE_SIZE = 1000
MAX_PAGES = 10_000  # a safety stop: 10 million objects in one pass is a server that loops

_COMMON_FIELDS = (
    "ref", "title", "description", "org_id", "org_name", "service_id", "service_name", "origin", "status",
    "caller_id", "caller_id_friendlyname", "start_date", "assignment_date", "last_pending_date",
    "resolution_date", "close_date", "last_update", "pending_reason", "solution", "public_log",
)
OUTPUT_FIELDS = {
    "UserRequest": ",".join((*_COMMON_FIELDS, "request_type")),
    "Incident": ",".join(_COMMON_FIELDS),  # an Incident has no request_type: it is an incident
}

# RestResult codes (application/applicationextension/rest/RestResult.php).
ERROR_CODES = {
    1: "UNAUTHORIZED", 2: "MISSING_VERSION", 3: "MISSING_JSON", 4: "INVALID_JSON", 5: "MISSING_AUTH_USER",
    6: "MISSING_AUTH_PWD", 10: "UNSUPPORTED_VERSION", 11: "UNKNOWN_OPERATION", 12: "UNSAFE", 13: "INVALID_PAGE",
    100: "INTERNAL_ERROR",
}
# Only INTERNAL_ERROR may go away by itself (database busy, a restart); the others are
# configuration (account, profile, version) that a person must fix.
TRANSIENT_CODES = frozenset({100})

ORIGIN_CHANNEL = {"portal": "portal", "phone": "phone", "mail": "email",
                  # raised by the team's own monitoring, not filed by a member: no portal intake clock
                  "monitoring": "email"}
REQUEST_TYPE_KIND = {"incident": "incident", "service_request": "assistance"}
ACTIVE_STATUSES = frozenset({"new", "escalated_tto", "assigned", "escalated_ttr", "waiting_for_approval",
                             "approved", "pending", "dispatched", "redispatched"})
UNKNOWN_MEMBER = "inconnu"
UNKNOWN_PRODUCT = "non-renseigne"

_NAMESPACE = uuid.UUID("3d1f7c52-9b0e-5a4f-8c6d-1e2a3b4c5d6e")


class ItopError(Exception):
    """iTop could not be read. ``transient``: retrying later may help (network, HTTP 5xx,
    INTERNAL_ERROR); otherwise the configuration must change (credentials, REST profile)."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.message, self.code, self.transient = message, code, transient


# --- the client -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ItopObject:
    """One object of a ``core/get`` answer: class, key and the requested fields."""

    itop_class: str
    key: str
    fields: Mapping[str, Any]

    @property
    def ref(self) -> str:
        return str(self.fields.get("ref") or f"{self.itop_class}::{self.key}")

    @property
    def last_update(self) -> str:
        return str(self.fields.get("last_update") or "")

    @property
    def version(self) -> str:
        """What the checkpoint remembers of an object read: its last_update and a digest of
        its fields (two changes in the same second share a last_update)."""
        digest = hashlib.sha256(json.dumps(dict(self.fields), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.last_update}#{digest[:16]}"


def endpoint_of(url: str) -> str:
    """The REST endpoint from an iTop base URL (``https://itop.example/``) or the endpoint itself."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("the iTop URL is empty (--url or SLALEDGER_ITOP_URL)")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"the iTop URL must be http(s)://…, not {url!r}")
    if parsed.username or parsed.password:
        raise ValueError("give the iTop credentials with --user/--password or --token, not in the URL")
    path = parsed.path if parsed.path.endswith(".php") else parsed.path + "/webservices/rest.php"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


class ItopClient:
    """``core/get`` over iTop's REST/JSON API, with user/password or token authentication."""

    def __init__(self, url: str, *, user: str = "", password: str = "", token: str = "",
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint_of(url)
        if not token and not user:
            raise ValueError("iTop credentials missing: --user/--password or --token "
                             "(env SLALEDGER_ITOP_USER/SLALEDGER_ITOP_PASSWORD or SLALEDGER_ITOP_TOKEN)")
        self.user, self.password, self.token, self.timeout = user, password, token, timeout

    @property
    def account(self) -> str:
        return self.user or "token"

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST one operation; returns the answer or raises ``ItopError`` for any error code."""
        form = {"json_data": json.dumps(request, separators=(",", ":"))}
        if self.token:
            form["auth_token"] = self.token
        else:
            form.update(auth_user=self.user, auth_pwd=self.password)
        url = f"{self.endpoint}?{urllib.parse.urlencode({'version': API_VERSION})}"
        http = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        operation = request.get("operation")
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ItopError(f"iTop a répondu HTTP {exc.code} ({self.endpoint})", code=None,
                            transient=exc.code >= 500 or exc.code in (408, 429)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ItopError(f"iTop injoignable ({self.endpoint}) : {reason}", transient=True) from None
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # A login page or a proxy error instead of JSON: often transient (maintenance page).
            raise ItopError(f"iTop n'a pas répondu en JSON ({self.endpoint}) : {body[:80]!r}", transient=True) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise ItopError(f"réponse iTop inattendue pour {operation} : {str(answer)[:120]}", transient=False)
        code = answer["code"]
        if code != 0:
            name = ERROR_CODES.get(code, "UNKNOWN")
            raise ItopError(f"iTop a répondu le code {code} ({name}) pour {operation} : {answer.get('message', '')}",
                            code=code, transient=code in TRANSIENT_CODES)
        return answer

    def get_page(self, itop_class: str, oql: str, limit: int, page: int) -> tuple[list[ItopObject], int]:
        """One page of ``core/get``; returns the usable objects and how many the page held."""
        answer = self.call({"operation": "core/get", "class": itop_class, "key": oql,
                            "output_fields": OUTPUT_FIELDS.get(itop_class, "*"), "limit": limit, "page": page})
        raw = answer.get("objects") or {}  # PHP sends null when nothing matches
        if not isinstance(raw, dict):
            raise ItopError(f"réponse iTop inattendue : objects = {str(raw)[:80]}")
        found: list[ItopObject] = []
        for name, item in raw.items():
            if not isinstance(item, dict) or item.get("code", 0) != 0 or not isinstance(item.get("fields"), dict):
                log.warning("itop object unreadable, skipped", itop_object=name,
                            code=item.get("code") if isinstance(item, dict) else None)
                continue
            key = str(item.get("key") or name.rpartition("::")[2])
            found.append(ItopObject(str(item.get("class") or itop_class), key, item["fields"]))
        return found, len(raw)

    def changed_since(self, itop_class: str, since: str | None, page_size: int) -> Iterator[ItopObject]:
        """Every object of ``itop_class`` with ``last_update >= since`` (all when None), page by page."""
        oql = f"SELECT {itop_class}" + (f" WHERE last_update >= '{since}'" if since else "")
        previous: list[str] | None = None
        for page in range(1, MAX_PAGES + 1):
            objects, count = self.get_page(itop_class, oql, page_size, page)
            keys = [o.key for o in objects]
            if previous is not None and keys == previous:
                log.info("itop ignores paging, stopping", itop_class=itop_class, page=page)
                return  # an iTop before 3.0 answers the whole set on every page
            yield from objects
            if count != page_size:  # a short page is the last; a longer one means no paging
                return
            previous = keys
        raise ItopError(f"plus de {MAX_PAGES} pages pour {itop_class} : arrêt par sécurité")


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


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:128]


def ticket_id_for(itop_class: str, key: str, ref: str | None) -> str:
    """``R-000123`` → ``IT-R-000123``: stable, readable, and within the ticket-id rules."""
    base = ref or f"{itop_class}-{key}"
    candidate = "IT-" + re.sub(r"[^A-Za-z0-9._:-]", "-", base)
    return validate_ticket_id(candidate[:64])


def command_id_for(ref: str, what: str, stamp: str, extra: str = "") -> uuid.UUID:
    """The same iTop fact always gives the same command id, hence the same event id."""
    return uuid.uuid5(_NAMESPACE, f"itop|{ref}|{what}|{stamp}|{extra}")


def parse_itop_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """iTop's "Y-m-d H:i:s" in the server's time zone, as a UTC instant; empty means not set.

    In the autumn hour that happens twice, iTop's naive time is ambiguous; the first
    occurrence is taken (``fold=0``), the same answer on every poll.
    """
    if value in (None, "", "0000-00-00 00:00:00"):
        return None
    try:
        naive = datetime.strptime(str(value), ITOP_TIME_FORMAT)
        # in UTC: an ambiguous local time compares badly
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 in Europe/Paris is before year 1 in UTC
        raise ValueError(f"not an iTop date-time (Y-m-d H:i:s): {value!r}") from None


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


def translate(obj: ItopObject, reference: Reference, *, actor: str, tz: ZoneInfo, now: datetime) -> Translation:
    """The commands one iTop snapshot stands for, in business-time order.

    start_date → file; assignment_date → acknowledge; public log entries → inform (by the
    team) or customer response (by the caller); last_pending_date → wait for customer;
    leaving pending → customer response; resolution_date → resolve (or the rejection);
    resolved then active again → reopen; close_date → close. The list is replayed through
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

    filing: dict[str, Any] = {"kind": kind, "channel": channel, "product": product[:128], "member": member[:128],
                              "subject": _clip(plain(str(f.get("title") or "")).strip() or ref, 500)}
    description = _clip(html_to_text(f.get("description")), 10_000)
    if description:
        filing["description"] = description
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
    if pending is not None:
        reason = _clip(html_to_text(f.get("pending_reason")), 10_000)
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
        solution = _clip(html_to_text(f.get("solution")), 10_000)
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
    closed, closed_raw = when("close_date")
    if closed is not None:
        facts.append(_Fact(closed, _ORDER[CommandType.CLOSE], "close_date", closed_raw, CommandType.CLOSE, {}))

    _simulate(out, sorted(facts, key=lambda x: (x.at, x.order)), actor, now, derive_ack=assigned is None)
    return out


def _simulate(out: Translation, facts: list[_Fact], actor: str, now: datetime, *, derive_ack: bool) -> None:
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
                events = decide(ticket, step, now)
            except DomainError as exc:
                out.skipped.append(Skipped(fact.what, fact.stamp, str(step.type), exc.message,
                                           retry=exc.code == "invalid" and step.occurred_at is not None
                                           and step.occurred_at > now))
                break
            ticket = ticket if ticket is not None else Ticket(out.ticket_id)
            for event in events:
                ticket.apply(event)
            out.commands.append(step)


# --- checkpoint -------------------------------------------------------------------------

@dataclass
class Checkpoint:
    watermark: str | None = None  # highest last_update read (iTop local "Y-m-d H:i:s")
    seen: dict[str, str] = field(default_factory=dict)  # key → last_update#digest, inside the overlap window


class CheckpointStore:
    """Checkpoints in the SQL database (table ``itop_checkpoints``), one per class."""

    def __init__(self, engine: Engine, source: str) -> None:
        self.engine, self.source = engine, source[:255]

    def load(self, itop_class: str) -> Checkpoint:
        from projections.models import ItopCheckpointRow

        with self.engine.connect() as conn:
            row = conn.execute(select(ItopCheckpointRow.watermark, ItopCheckpointRow.seen).where(
                ItopCheckpointRow.source == self.source, ItopCheckpointRow.itop_class == itop_class)).first()
        if row is None:
            return Checkpoint()
        return Checkpoint(row.watermark, {str(k): str(v) for k, v in (row.seen or {}).items()})

    def save(self, itop_class: str, checkpoint: Checkpoint) -> None:
        from sqlalchemy.orm import Session

        from projections.models import ItopCheckpointRow

        with Session(self.engine) as session, session.begin():
            row = session.get(ItopCheckpointRow, (self.source, itop_class))
            if row is None:
                row = ItopCheckpointRow(source=self.source, itop_class=itop_class)
                session.add(row)
            row.watermark = checkpoint.watermark
            row.seen = dict(checkpoint.seen)
            row.updated_at = datetime.now(UTC)


# --- publishing -------------------------------------------------------------------------

class Publisher(Protocol):
    def send(self, command: Command) -> None: ...

    def flush(self) -> None:
        """Return once everything sent is acknowledged by the broker; raise otherwise."""


class KafkaPublisher:
    """Commands to the commands topic keyed by ticket id (one partition: order kept)."""

    def __init__(self, bootstrap: str, *, embedded: bool, timeout: float = 30.0) -> None:
        from .kafka_tools import producer

        # One request in flight: a retried batch cannot overtake the next one (order per ticket).
        self.producer = producer(bootstrap, embedded=embedded, max_in_flight_requests_per_connection=1,
                                 client_id="slaledger-itop")
        self.timeout = timeout
        self.pending: list[Any] = []

    def send(self, command: Command) -> None:
        self.pending.append(self.producer.send(COMMANDS, key=command.ticket_id.encode(),
                                               value=encode_command(command)))

    def flush(self) -> None:
        self.producer.flush(timeout=self.timeout)
        pending, self.pending = self.pending, []
        for future in pending:
            future.get(timeout=self.timeout)

    def close(self) -> None:
        self.producer.close(timeout=self.timeout)


# --- one pass ----------------------------------------------------------------------------

@dataclass
class SyncResult:
    source: str
    fetched: int = 0
    unchanged: int = 0
    tickets: int = 0
    commands: int = 0
    unknown: list[Unknown] = field(default_factory=list)
    skipped: int = 0
    watermarks: dict[str, str | None] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # "ref: reason" of objects not taken in

    def unknown_by_kind(self) -> dict[str, dict[str, list[str]]]:
        """``{"organisation": {"Mairie de X": ["R-000104", …]}, …}``, in a stable order."""
        out: dict[str, dict[str, list[str]]] = {}
        for item in self.unknown:
            refs = out.setdefault(item.what, {}).setdefault(item.value, [])
            if item.ref not in refs:
                refs.append(item.ref)
        return out

    def summary(self) -> str:
        """For the person running ``slaledger itop sync --once`` (French)."""
        lines = [f"iTop {self.source} : {self.fetched} objet(s) lu(s) dont {self.unchanged} inchangé(s), "
                 f"{self.commands} commande(s) publiée(s) pour {self.tickets} ticket(s)"
                 + (f", {self.skipped} transition(s) non reprise(s) (refusées par le cycle de vie, voir les journaux)"
                    if self.skipped else "")]
        titles = {"organisation": "Organisations inconnues (membre déduit du nom ; à ajouter à --org-map)",
                  "service": "Services inconnus (produit déduit du nom ; à ajouter à --org-map)",
                  "origin": "Origines inconnues (canal e-mail retenu)",
                  "request_type": "Types de demande inconnus (assistance retenue)"}
        for what, values in self.unknown_by_kind().items():
            listed = "; ".join(f"{value or '(vide)'} : {', '.join(refs)}" for value, refs in values.items())
            lines.append(f"{titles.get(what, what)} : {listed}")
        if self.unreadable:
            lines.append(f"Objets illisibles, non repris : {'; '.join(self.unreadable)}")
        return "\n".join(lines)


def _shift(stamp: str, delta: timedelta) -> str:
    return (datetime.strptime(stamp, ITOP_TIME_FORMAT) + delta).strftime(ITOP_TIME_FORMAT)


def sync_once(client: ItopClient, publisher: Publisher, store: CheckpointStore, reference: Reference, *,
              tz: ZoneInfo, page_size: int = 100, overlap: timedelta = timedelta(minutes=65),
              since: str | None = None, classes: tuple[str, ...] = ITOP_CLASSES,
              now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> SyncResult:
    """Read what changed in iTop since the checkpoint, publish its commands, move the checkpoint.

    The window re-read each time (``overlap``, 65 min by default) covers rows committed
    late with an older ``last_update`` and the autumn DST hour, when iTop's local times go
    back by one hour. Objects already read with the same ``last_update`` are skipped; the
    others are re-sent whole, which is harmless (deterministic ids). The checkpoint moves
    only after the broker acknowledged every command of the pass.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    result = SyncResult(client.endpoint)
    actor = f"itop:{client.account}"[:128]
    tickets: set[str] = set()
    for itop_class in classes:
        checkpoint = store.load(itop_class)
        start = _shift(checkpoint.watermark, -overlap) if checkpoint.watermark else since
        watermark, seen = checkpoint.watermark, dict(checkpoint.seen)
        log.info("itop pass", itop_class=itop_class, since=start, watermark=watermark)
        for obj in client.changed_since(itop_class, start, page_size):
            result.fetched += 1
            stamp = obj.last_update
            if stamp and seen.get(obj.key) == obj.version:
                result.unchanged += 1
                continue
            try:
                if stamp:
                    parse_itop_time(stamp, tz)  # a bad stamp must not become the watermark
                done = _publish(obj, reference, publisher, result, actor=actor, tz=tz, now=now())
            except ValueError as exc:  # one odd object must not stop the sync at every pass
                log.warning("itop object skipped: unreadable", itop_class=itop_class, key=obj.key, error=str(exc))
                result.unreadable.append(f"{obj.key}: {exc}")
                continue
            tickets.add(done.ticket_id)
            if stamp:
                watermark = max(watermark or stamp, stamp)
                if not any(s.retry for s in done.skipped):
                    seen[obj.key] = obj.version
        publisher.flush()
        if watermark:
            floor = _shift(watermark, -overlap)
            seen = {k: v for k, v in seen.items() if v >= floor}
        store.save(itop_class, Checkpoint(watermark, seen))
        result.watermarks[itop_class] = watermark
    result.tickets = len(tickets)
    return result


def _publish(obj: ItopObject, reference: Reference, publisher: Publisher, result: SyncResult, *, actor: str,
             tz: ZoneInfo, now: datetime) -> Translation:
    translation = translate(obj, reference, actor=actor, tz=tz, now=now)
    context = {"ticket_id": translation.ticket_id, "itop_ref": obj.ref, "itop_class": obj.itop_class,
               "itop_key": obj.key}
    for item in translation.unknown:
        log.warning(f"itop {item.what} unknown", value=item.value, **context)
    for skip in translation.skipped:
        log.info("itop transition not mapped", itop_field=skip.field, itop_time=skip.stamp, command=skip.command,
                 reason=skip.reason, **context)
    for command in translation.commands:
        publisher.send(command)
        log.debug("itop command published", command=str(command.type), command_id=str(command.command_id),
                  event_id=str(command_event_id(command.command_id)), occurred_at=command.occurred_at, **context)
    log.info("itop object published", commands=len(translation.commands), last_update=obj.last_update, **context)
    result.commands += len(translation.commands)
    result.unknown.extend(translation.unknown)
    result.skipped += len(translation.skipped)
    return translation


# --- retries and the loop ----------------------------------------------------------------

def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: base, 2×base, 4×base… up to cap."""
    return float(min(cap, base * 2 ** min(max(0, failures - 1), 60)))  # days of failures: no overflow


def _failure_fields(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ItopError):
        return {"code": exc.code, "code_name": ERROR_CODES.get(exc.code or 0), "transient": exc.transient,
                "error": exc.message}
    return {"transient": True, "error": f"{type(exc).__name__}: {exc}"}


def run_once(sync: Callable[[], SyncResult], *, attempts: int = 3, base: float = 1.0, cap: float = 300.0,
             sleep: Callable[[float], Any] = time.sleep) -> SyncResult:
    """One pass, retried with back-off on transient failures; the last failure is raised."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return sync()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            fields = _failure_fields(exc)
            if attempt >= attempts or not fields["transient"]:
                log.error("itop sync failed", attempt=attempt, **fields)
                raise
            delay = backoff(attempt, base, cap)
            log.warning("itop sync failed, retrying", attempt=attempt, retry_in=delay, **fields)
            sleep(delay)
    raise AssertionError("unreachable")


def run_forever(sync: Callable[[], SyncResult], *, every: float, stop: threading.Event, base: float = 1.0,
                cap: float = 300.0) -> None:
    """Poll every ``every`` seconds until ``stop`` is set; failures back off exponentially
    (capped), whatever the cause: an account fixed in iTop is picked up without a restart."""
    failures = 0
    while not stop.is_set():
        try:
            result = sync()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            failures += 1
            delay = backoff(failures, base, cap)
            fields = _failure_fields(exc)
            (log.warning if fields["transient"] else log.error)(
                "itop sync failed", failures=failures, retry_in=delay, **fields)
            stop.wait(delay)
            continue
        if failures:
            log.info("itop sync recovered", after_failures=failures)
        failures = 0
        log.info("itop sync done", fetched=result.fetched, unchanged=result.unchanged, commands=result.commands,
                 tickets=result.tickets, unknown=len(result.unknown), skipped=result.skipped,
                 watermarks=result.watermarks)
        stop.wait(every)


def is_retryable(exc: Exception) -> bool:
    """iTop, broker and database failures are retried; programming errors are not."""
    from kafka.errors import KafkaError
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, ItopError | KafkaError | OperationalError | TimeoutError | ConnectionError)


def describe_failure(exc: Exception) -> str:
    """One line for the person who ran ``--once`` (French)."""
    if isinstance(exc, ItopError):
        return exc.message
    return f"{type(exc).__name__} : {exc}".splitlines()[0]


def parse_since(value: str | None) -> str | None:
    """``--since``: an iTop local date-time ("2026-11-01 00:00:00" or "2026-11-01")."""
    if not value:
        return None
    for fmt in (ITOP_TIME_FORMAT, "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).strftime(ITOP_TIME_FORMAT)
        except ValueError:
            continue
    raise ValueError(f"--since: {value!r} is not 'YYYY-MM-DD[ HH:MM:SS]' (iTop local time)")


def parse_duration(value: str) -> float:
    """``60s``, ``5m``, ``1h`` or a number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value or "")
    if not match:
        raise ValueError(f"{value!r} is not a duration (e.g. 60s, 5m, 1h)")
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    seconds = float(match.group(1)) * scale
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return seconds


__all__ = ["ItopClient", "ItopError", "Reference", "SyncResult", "run_forever", "run_once", "sync_once", "translate"]
