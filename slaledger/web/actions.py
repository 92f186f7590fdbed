"""The agents' and referents' actions from the pages: which forms a caller sees, the token
that protects them, and a posted form turned into the API's request body.

A form goes down the API's own command path (``commands.py`` → commands topic → the
ticket agent's outcome), so a page can do nothing the API would refuse, and a refusal is
the domain's French message. The session cookie is SameSite=Strict; on top of it every
form carries a token derived from the session (an HMAC keyed by the session's bearer
token): another site can neither read the cookie nor compute the token, and any worker
can check it without shared state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sla import french
from sla.events import CHANNELS, KINDS
from sla.ticket import CommandType, Status, commands_allowed

from .access import BadRequest
from .commands import ACTIONS
from .ports import Principal

ACTION_NAME = {command: name for name, command in ACTIONS.items()}  # CommandType → the API's path word
# Without authentication there is no session to derive the token from: one per process.
_NO_SESSION_KEY = secrets.token_hex(32)
_FORM_KEY = re.compile(r"^form-[A-Za-z0-9_-]{16,64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab and line breaks are text


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    widget: str  # text, textarea, datetime, checkbox, select
    required: bool = False
    choices: tuple[tuple[str, str], ...] = ()
    hint: str = ""
    max_length: int = 10_000  # the event schema's limit (sla.events.PAYLOAD_SCHEMAS)


NOTE = Field("note", "Note (facultative)", "textarea")
WHEN = Field("occurred_at", "Date de l'action, si ce n'est pas maintenant (heure de Paris)", "datetime",
             hint="Un appel pris plus tôt, par exemple ; dans la limite fixée par la politique.")
KIND_CHOICES = tuple((k, french.KIND[k]) for k in KINDS)
FILING_FIELDS = (
    Field("member", "Membre", "text", required=True, max_length=128),
    Field("kind", "Type de demande", "select", required=True, choices=KIND_CHOICES),
    Field("channel", "Canal", "select", required=True, choices=tuple((c, french.CHANNEL[c]) for c in CHANNELS)),
    Field("product", "Produit ou service", "text", required=True, max_length=128),
    Field("subject", "Objet", "text", required=True, max_length=500),
    Field("description", "Description", "textarea"),
    Field("elements_complete", "Tous les éléments nécessaires sont fournis", "checkbox"),
)
FILING_TIME = Field("received_at", "Reçue le, si ce n'est pas maintenant (heure de Paris)", "datetime",
                    hint="Une demande reçue par téléphone ou courriel plus tôt.")


@dataclass(frozen=True)
class ActionForm:
    action: str  # the API's action word (``/api/tickets/{id}/{action}``)
    label: str
    fields: tuple[Field, ...]


def action_fields(command: CommandType, kind: str | None, dating: bool) -> tuple[Field, ...]:
    """The inputs of one action on a ticket of ``kind``: only those that mean something for it
    (``kind`` None: every input, to read a form posted to a worker that does not hold the ticket)."""
    out: list[Field] = []
    if command is CommandType.ACKNOWLEDGE:
        out = [NOTE]
    elif command is CommandType.INFORM:
        out = [Field("message", "Message au demandeur", "textarea", required=True)]
        if kind in (None, "incident"):
            out.append(Field("restoration_eta", "Rétablissement probable le (heure de Paris)", "datetime"))
        if kind in (None, "administrative"):
            out.append(Field("answer", "Ce message répond à la demande (réponse administrative)", "checkbox"))
    elif command is CommandType.WAIT_FOR_CUSTOMER:
        out = [Field("reason", "Ce qui est attendu du demandeur", "textarea")]
    elif command is CommandType.CUSTOMER_RESPONSE:
        out = [Field("message", "Réponse ou information apportée", "textarea"),
               Field("elements_complete", "Tous les éléments nécessaires sont désormais fournis", "checkbox")]
    elif command is CommandType.RECLASSIFY:
        out = [Field("kind", "Nouveau type", "select", choices=(("", "(inchangé)"), *KIND_CHOICES)),
               Field("product", "Nouveau produit (vide : inchangé)", "text", max_length=128),
               Field("reason", "Motif", "textarea")]
    elif command is CommandType.RESOLVE:
        out = [Field("resolution", "Solution apportée", "textarea")]
    elif command is CommandType.CLOSE:
        out = [NOTE]
    elif command is CommandType.REOPEN:
        out = [Field("reason", "Motif de la réouverture", "textarea")]
    return (*out, WHEN) if dating else tuple(out)


def forms_for(who: Principal, status: str, kind: str) -> list[ActionForm]:
    """The actions ``who`` may take on a ticket in ``status``: a referent answers and adds
    information; the support team does what the ticket's status allows; an auditor reads."""
    allowed = [c for c in commands_allowed(Status(status)) if who.may_send(c)]
    return [ActionForm(ACTION_NAME[c], french.ACTION[str(c)], action_fields(c, kind, who.dates_facts)) for c in allowed]


def filing_fields(who: Principal) -> tuple[Field, ...]:
    """The filing form: a referent files for their own member, on the portal, undated."""
    if who.referent:
        return tuple(f for f in FILING_FIELDS if f.name not in ("member", "channel"))
    return (*FILING_FIELDS, FILING_TIME) if who.dates_facts else FILING_FIELDS


def filing_body(who: Principal, form: Mapping[str, str], tz: ZoneInfo) -> dict[str, Any]:
    """A filing form as the API's body; a referent's request comes through the portal."""
    body = body_from_form(filing_fields(who), form, tz)
    if who.referent:
        body["channel"] = "portal"
    return body


def may_file(who: Principal) -> bool:
    return who.may_send(CommandType.FILE)


# --- the form token ---------------------------------------------------------------------------

def form_token(session: str) -> str:
    """The anti-forgery token of every form of a session (the session's random id keys it:
    every worker derives the same one, and it dies with the session)."""
    key = (session or _NO_SESSION_KEY).encode()
    return hmac.new(key, b"slaledger-form-v1", hashlib.sha256).hexdigest()


def form_token_ok(session: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(form_token(session).encode(), given.encode())


def new_form_key() -> str:
    """Each rendered form's idempotency key: a double click or a resent form is one command."""
    return "form-" + secrets.token_urlsafe(18)


def typed(form: Mapping[str, str]) -> list[tuple[str, str]]:
    """What a person typed in a form, to give it back when the form cannot be shown again."""
    return [(name, str(value)) for name, value in form.items()
            if name not in ("action", "form_token", "form_key") and str(value).strip()]


def posted_form_key(form: Mapping[str, str]) -> str | None:
    """The form's idempotency key as posted (None, a new command each time, when malformed)."""
    key = str(form.get("form_key", ""))
    return key if _FORM_KEY.match(key) else None


# --- a posted form → the API's body -----------------------------------------------------------

def body_from_form(fields: tuple[Field, ...], form: Mapping[str, str], tz: ZoneInfo) -> dict[str, Any]:
    """The JSON body the API would have received: empty inputs left out, boxes as booleans,
    a local date-time (``datetime-local``: no offset) read in the policy's time zone."""
    body: dict[str, Any] = {}
    for f in fields:
        raw = str(form.get(f.name, "")).strip()
        if f.widget == "checkbox":
            if f.name == "elements_complete" or raw:  # the API requires elements_complete on a response
                body[f.name] = raw in ("on", "1", "true")
            continue
        if not raw:
            if f.required:
                raise BadRequest(422, f"{f.label} : à renseigner", f.name)
            continue
        if len(raw) > f.max_length:
            raise BadRequest(422, f"{f.label} : {len(raw)} caractères, {f.max_length} au plus", f.name)
        if _CONTROL.search(raw):
            raise BadRequest(422, f"{f.label} : caractère de contrôle non accepté (copié-collé ?)", f.name)
        body[f.name] = local_instant(raw, f, tz) if f.widget == "datetime" else raw
    return body


def local_instant(raw: str, f: Field, tz: ZoneInfo) -> str:
    """A browser's ``datetime-local`` value (or an ISO instant) as an ISO instant with offset."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(422, f"{f.label} : date et heure attendues (AAAA-MM-JJ HH:MM)", f.name) from None
    if value.tzinfo is not None:
        return value.isoformat()
    local = value.replace(tzinfo=tz)
    try:
        local.astimezone(UTC)
    except OverflowError:  # year 1 in Paris is before the first instant Python can hold in UTC
        raise BadRequest(422, f"{f.label} : {raw} est hors des dates acceptées", f.name) from None
    # a fact's time may be read in court: a clock change is never resolved by guessing
    if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != value:
        raise BadRequest(422, f"{f.label} : {value:%d/%m/%Y %H:%M} n'existe pas à Paris (passage à l'heure "
                              "d'été) ; indiquez l'heure réellement lue", f.name)
    if local.replace(fold=1).utcoffset() != local.utcoffset():
        raise BadRequest(422, f"{f.label} : {value:%d/%m/%Y %H:%M} a lieu deux fois à Paris (passage à l'heure "
                              "d'hiver) ; indiquez une heure hors de ce créneau, ou datez par l'API avec le "
                              "décalage (+02:00 ou +01:00)", f.name)
    return local.isoformat()
