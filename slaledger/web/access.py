"""Who is calling and what they may see: shared by the JSON API and the web pages.

Authentication (bearer token, or the web view's session cookie for reads), the referent's
scope (another member's ticket does not exist for them) and the HTTP errors of both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol

import structlog
from aiohttp import web as aioweb
from faust.web import Request
from faust.web.exceptions import WebError

from sla.clock import evaluate
from sla.display import shown_state
from sla.ticket import Ticket

from .ports import Authenticator, Ports, Principal
from .throttle import FailureLimit, Network, client_address

log = structlog.get_logger(__name__)

ANONYMOUS = Principal("-", "admin", None, "anonymous")  # authentication turned off
# The web view's sign-in cookie: a session id (``TokenStore.open_session``), never the token.
SESSION_COOKIE = "slaledger_session"
MAX_SECRET = 256  # longer is no token or session id of ours: refused without a database look-up


class BadRequest(WebError):
    """A request refused: its status, the French ``message``, the input at fault (``field``)
    and headers to answer with. A view that does not catch it answers it in JSON
    (``EdgeView.on_request_error``): Faust hands a view's ``WebError`` to that hook."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        Exception.__init__(self, message)  # not WebError's: its arguments would make str() recurse
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}
        self.code, self.detail, self.extra_context = status, message, {}

    def body(self) -> dict[str, str]:
        """The JSON answer's body: ``{"error"}``, and ``"field"`` when one is at fault."""
        return {"error": self.message, **({"field": self.field} if self.field else {})}


def too_many_failures(retry_after: int) -> BadRequest:
    return BadRequest(429, f"Trop de jetons refusés depuis votre adresse : réessayez dans {retry_after} s.",
                      headers={"Retry-After": str(retry_after)})


def session_id(request: Request) -> str:
    """The session id carried by the web view's cookie ("" when none)."""
    try:
        jar = SimpleCookie(request.headers.get("Cookie", ""))
    except CookieError:
        return ""
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and len(morsel.value) <= MAX_SECRET else ""


def refuse_if_limited(failures: FailureLimit, address: str, what: str) -> None:
    """429 (BadRequest) while ``address`` is past its refused tokens, for a bearer token and a
    sign-in alike; logged with the address, never the secret."""
    wait = failures.retry_after(address)
    if wait is not None:
        log.warning(f"{what} refused: too many failures", client=address, retry_after=wait)
        raise too_many_failures(wait)


def caller_address(ports: Ports, request: Request) -> str:
    return client_address(request, ports.trusted_proxies)


async def find_tickets(ports: Ports, who: Principal, now: datetime, *, statuses: Collection[str] = (),
                       member: str | None = None, sla_status: str | None = None) -> list[Ticket]:
    """The tickets ``who`` may see, filtered (unordered). The API list and the web queue
    share it, so a referent's scoping is decided in one place."""
    if who.referent:
        if member and member != who.member:
            return []
        member = who.member
    found = await ports.finder.find(statuses, member)
    rows = []
    for ticket in found:
        if not ticket.exists:
            continue
        if sla_status:
            clocks = evaluate(ticket, ports.policy, now)
            states = {shown_state(str(c.status), at_risk=c.at_risk) for c in clocks}
            if sla_status not in states:
                continue
        rows.append(ticket)
    return rows


TAKING_BACK = "ce ticket est en cours de reprise par ce serveur ; réessayez dans un instant"


def taken_back(ports: Ports, ticket_id: str) -> bool:
    """A ticket this worker lacks only because its partition is being taken back (a fenced
    partition, before the rejoin recovers it): answered 503, not "not found"."""
    return not ports.tickets.serves(ticket_id)


def visible_ticket(ports: Ports, who: Principal, ticket_id: str) -> Ticket | None:
    """This worker's copy of a ticket, or None when it does not exist for ``who`` (another
    member's ticket does not exist for a referent: no existence leak)."""
    ticket = ports.tickets.load(ticket_id)
    if ticket is None or not ticket.exists or (who.referent and ticket.member != who.member):
        return None
    return ticket


@aioweb.middleware
async def json_errors(request: aioweb.Request, handler: Any) -> aioweb.StreamResponse:
    """Errors raised by the web framework itself (405, unknown path…) answer in JSON too, and
    so does an unexpected failure (500, logged with its traceback)."""
    try:
        response: aioweb.StreamResponse = await handler(request)
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        return aioweb.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return aioweb.json_response({"error": "erreur interne ; elle a été journalisée"}, status=500)
    return response


async def bearer(request: Request | aioweb.BaseRequest, store: Authenticator, failures: FailureLimit,
                 trusted: tuple[Network, ...]) -> Principal:
    """The principal of the request's bearer token (``store.authenticate``), or BadRequest:
    401 when missing, unknown or revoked, 429 after too many refused tokens from the client's
    address (which then is refused even a right token; logged, without the secret)."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise BadRequest(401, "jeton absent (en-tête Authorization: Bearer …)")
    address = client_address(request, trusted)
    refuse_if_limited(failures, address, "bearer token")
    principal = None
    if len(secret) <= MAX_SECRET:
        principal = await asyncio.get_running_loop().run_in_executor(None, store.authenticate, secret)
    if principal is None:
        failures.failed(address)
        log.warning("bearer token refused", client=address)
        raise BadRequest(401, "jeton invalide ou révoqué")
    return principal


class Authenticate(Protocol):
    async def __call__(self, request: Request, *, cookie: bool = ..., scrape: bool = ...) -> Principal: ...


def authenticator(ports: Ports) -> Authenticate:
    """The caller of a request, from the token store of ``ports`` (anyone is the anonymous
    admin when authentication is off)."""

    async def authenticate(request: Request, *, cookie: bool = False, scrape: bool = False) -> Principal:
        """The caller, from its bearer token (401 when missing, unknown or revoked; 429 after
        too many refused tokens from its address).

        ``cookie``: the web view's session cookie stands for the header (a browser link
        cannot send one). Only reads accept it, so no command can ride on a cookie.
        ``scrape``: the route is /metrics, the only one a ``metrics`` token opens (403 elsewhere).
        """
        store = ports.auth
        if store is None:
            return ANONYMOUS
        if cookie and not request.headers.get("Authorization"):
            sid = session_id(request)
            principal = await asyncio.get_running_loop().run_in_executor(None, store.session, sid) if sid else None
            if principal is None:
                raise BadRequest(401, "session absente, expirée ou fermée : reconnectez-vous")
            return principal
        principal = await bearer(request, store, ports.failures, ports.trusted_proxies)
        if principal.role == "metrics" and not scrape:
            raise BadRequest(403, "ce jeton ne sert qu'à lire /metrics")
        return principal

    return authenticate
