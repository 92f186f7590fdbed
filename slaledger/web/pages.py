"""The web view: the queue and each ticket's SLA story, as server-rendered HTML.

Grafana is the support team's cockpit, but it cannot tell one ticket's story, referents
have no Grafana account, and a newcomer running ``slaledger dev`` should see the product
rather than JSON. So the worker's own web server (same process and port as the API)
serves a few pages, built from the API's own data paths: ``authenticate`` for the caller,
``find_tickets`` for the queue, ``visible_ticket`` behind ``table_route`` for a ticket and
``ticket_view`` for its shape. The pages therefore cannot show what the API would refuse.

No build step: the HTML comes from Jinja2 templates with autoescape (``render.py`` and
``templates/``; this module holds the routes only), with one stylesheet and one small
script under ``slaledger/web/static/`` (served here, so a strict Content-Security-Policy
holds). Without the script the pages still work; with it, countdowns tick every second
and the queue refreshes every few seconds without a full reload.

Sign-in posts the same token as the API and opens a server-side session (``TokenStore.
open_session``): the HttpOnly, SameSite=Strict cookie holds the session's random id, never
the token; sign-out deletes the session, and it ends by itself when idle or old
(``SLALEDGER_WEB_SESSION_IDLE`` / ``_LIFETIME``) or when its token is revoked. The cookie is
``Secure`` when the public URL (``SLALEDGER_PUBLIC_URL``) is https: configuration, never a
request header. Reads accept the cookie (pages, the queue fragment, the dispute-file link),
and so do the pages' own forms (file a request, act on a ticket: ``actions.py``), which
must also carry the session's form token and come from this site; the JSON API never takes
the cookie. Refused sign-ins count against the client's address like refused bearer tokens
(``throttle.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import faust
import structlog
from faust.web import Request, Response, View

from service.outcomes import CommandUnavailable, NoOutcome
from service.principal import Principal
from sla import french
from sla.events import KINDS, Event
from sla.ticket import OPEN_STATUSES, Command, CommandType, Ticket
from sla.view import ticket_view

from . import actions, render
from .access import (
    MAX_SECRET,
    SESSION_COOKIE,
    BadRequest,
    authenticator,
    caller_address,
    find_tickets,
    refuse_if_limited,
    session_id,
    visible_ticket,
)
from .api import ACTIONS, command_from_body, http_status, key_scope, new_ticket_id
from .ports import Ports

log = structlog.get_logger(__name__)


QUEUE_LIMIT = 300  # rows shown; the count says how many matched
REFRESH_SECONDS = 5
DISPUTE_FORMATS = {"json": ("application/json; charset=utf-8", "json"), "md": ("text/markdown; charset=utf-8", "md"),
                   "html": ("text/html; charset=utf-8", "html"), "pdf": ("application/pdf", "pdf")}
STATIC = {"web.css": "text/css; charset=utf-8", "web.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]")


def local_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):  # browsers drop tab/CR/LF: "/\t/x" is "//x"
        return "/"
    return value


# --- responses ---------------------------------------------------------------------------------

def html_response(view: View, body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return view.html(body, status=status, headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(view: View, location: str, cookie: str | None = None) -> Response:
    headers = {**SECURITY_HEADERS, "Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return view.text("", status=303, headers=headers)


def session_cookie(sid: str, *, secure: bool) -> str:
    """HttpOnly (no script reads it), SameSite=Strict (no other site sends it), whole site;
    no expiry (gone with the browser; the server ends the session anyway)."""
    jar: SimpleCookie = SimpleCookie()
    jar[SESSION_COOKIE] = sid
    morsel = jar[SESSION_COOKIE]
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = "/"
    if secure:
        morsel["secure"] = True
    if not sid:
        morsel["max-age"] = 0
        morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    return morsel.OutputString()


# --- the queue -------------------------------------------------------------------------------

def queue_filters(query: Mapping[str, str], who: Principal) -> dict[str, str]:
    """The filters understood by the queue; anything else is ignored (a page never 422s)."""
    member = query.get("member", "").strip()[:128]
    kind = query.get("kind", "")
    state = query.get("sla", "")
    return {
        "member": (who.member or "") if who.role == "referent" else member,
        "kind": kind if kind in KINDS else "",
        "sla": state if state in render.FILTER_STATES else "",
    }


@cache
def static_asset(name: str) -> bytes:
    return (resources.files("slaledger.web") / "static" / name).read_bytes()


# --- routes --------------------------------------------------------------------------------------

def register_pages(app: faust.App, route_table: Any, ports: Ports) -> None:
    """Attach the web pages to the worker's Faust web server (same port as the API)."""
    authenticate = authenticator(ports)
    tz = ports.policy.versions[0].tz

    def now() -> datetime:
        return datetime.now(tz=tz)

    async def caller(request: Request) -> Principal | None:
        try:
            return await authenticate(request, cookie=True)
        except BadRequest:
            return None

    def to_login(view: View, request: Request) -> Response:
        target = local_next(request.rel_url.path_qs)
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and not session_id(request):
            # A link from elsewhere (an alert, a mail): the SameSite=Strict cookie was held
            # back. Going on from this page is a same-site navigation, which carries it.
            return html_response(view, render.redirect_page(target))
        return redirect(view, "/login?" + urlencode({"next": target}))

    def same_origin(request: Request) -> bool:
        """A form post from this site: SameSite keeps the cookie from other sites, this
        keeps them from signing a browser in or out behind its user's back."""
        origin = request.headers.get("Origin")
        return origin is None or origin.split("://", 1)[-1] == request.headers.get("Host", "")

    def member_name(member: str) -> str:
        """What a page shows for a member: its name in the directory, else the id as stored."""
        return ports.members.name(member) if ports.members is not None else member

    def page_view(ticket: Ticket, at: datetime) -> dict[str, Any]:
        """The API's view of a ticket, with its member's name (pages show names, not ids)."""
        view = ticket_view(ticket, ports.policy, at)
        view["member_name"] = member_name(ticket.member)
        return view

    async def queue_views(who: Principal, filters: dict[str, str], at: datetime) -> tuple[list[dict[str, Any]], int]:
        found = await find_tickets(ports, who, at, statuses=OPEN_STATUSES, member=filters["member"] or None,
                                   sla_status=filters["sla"] or None)
        views = [page_view(t, at) for t in found if not filters["kind"] or t.kind == filters["kind"]]
        views.sort(key=render.queue_sort_key)
        return views[:QUEUE_LIMIT], len(views)

    @app.page("/")
    class QueuePage(View):
        async def get(self, request: Request) -> Response:
            who = await caller(request)
            if who is None:
                return to_login(self, request)
            at = now()
            filters = queue_filters(request.query, who)
            views, total = await queue_views(who, filters, at)
            members: dict[str, str] = {}
            if who.role != "referent":
                members = {t.member: member_name(t.member)
                           for t in await find_tickets(ports, who, at, statuses=OPEN_STATUSES) if t.member}
            fragment = "/fragments/queue?" + urlencode({k: v for k, v in filters.items() if v})
            return html_response(self, render.queue_page(who, filters, members, views, total, at, tz,
                                                         fragment=fragment, refresh=REFRESH_SECONDS))

    @app.page("/fragments/queue")
    class QueueFragment(View):
        async def get(self, request: Request) -> Response:
            who = await caller(request)
            if who is None:
                return html_response(self, render.session_expired(), status=401)
            at = now()
            filters = queue_filters(request.query, who)
            views, total = await queue_views(who, filters, at)
            return html_response(self, render.queue_table(views, total, at, tz))

    async def read_form(view: View, request: Request, title: str,
                        back: str) -> tuple[Principal, dict[str, str]] | Response:
        """The caller and the fields of a page's form, or the answer to a post that cannot be
        theirs: no session (sign in, then back to the page ``back``, not to the post's
        address), another site, or no valid form token (403)."""
        who = await caller(request)
        if who is None:
            return redirect(view, "/login?" + urlencode({"next": back}))
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not same_origin(request) or not actions.form_token_ok(session_id(request), form.get("form_token", "")):
            log.warning("form post refused: other site or missing form token", path=request.url.path, actor=who.actor)
            return html_response(view, render.refused_page(title), status=403)
        return who, form

    async def submit(command: Command) -> tuple[bool, str, int]:
        """Send a page's command: (accepted, the refusal's French message, HTTP status)."""
        if not ports.commands.accepting:
            return False, "Le service démarre : réessayez dans un instant.", 503
        try:
            outcome = await ports.commands.submit(command)
        except CommandUnavailable:
            return False, "Le journal des événements est indisponible : réessayez dans un instant.", 503
        except NoOutcome:
            return False, ("Pas de réponse à temps : elle a peut-être été enregistrée. Renvoyer ce formulaire "
                           "tel quel ne la doublera pas."), 504
        status = http_status(outcome)
        log.info("web command answered", ticket_id=command.ticket_id, command_id=str(command.command_id),
                 command=str(command.type), status=status, actor=command.actor)
        return status < 300, str(outcome.body.get("error", "")), status

    def ticket_path(ticket_id: str, done: str) -> str:
        return f"/tickets/{quote(ticket_id, safe='')}?{urlencode({'fait': done})}#actions"

    # What the filing form's member and product inputs propose (``<datalist>``): the names.
    filing_names = {"member": [e.name for e in ports.members.entries] if ports.members is not None else [],
                    "product": [e.name for e in ports.policy.products.entries]}

    @app.page("/new-ticket")
    class NewTicket(View):
        async def get(self, request: Request) -> Response:
            who = await caller(request)
            if who is None:
                return to_login(self, request)
            if not actions.may_file(who):
                return html_response(self, render.refused_page("Nouvelle demande"), status=403)
            return html_response(self, render.new_ticket_page(who, token=actions.form_token(session_id(request)),
                                                              suggestions=filing_names))

        async def post(self, request: Request) -> Response:
            read = await read_form(self, request, "Nouvelle demande", "/new-ticket")
            if not isinstance(read, tuple):
                return read
            who, form = read
            token = actions.form_token(session_id(request))
            key = actions.posted_form_key(form)
            try:
                body = actions.filing_body(who, form, tz)
                ticket_id = new_ticket_id(key_scope(who, key) if key is not None else None)
                command = command_from_body(CommandType.FILE, ticket_id, body, who, key, ports.members)
            except BadRequest as exc:
                return html_response(self, render.new_ticket_page(who, token=token, values=form, refusal=exc.message,
                                                                  form_key=key, suggestions=filing_names),
                                     status=exc.status)
            accepted, message, status = await submit(command)
            if not accepted:  # shown again with its key: sent again, it is the same filing
                return html_response(self, render.new_ticket_page(who, token=token, values=form, refusal=message,
                                                                  form_key=key, suggestions=filing_names),
                                     status=status)
            return redirect(self, ticket_path(ticket_id, "file"))

    @app.page("/tickets/{ticket_id}/actions")
    class TicketActions(View):
        """An action posted from the ticket page: sent like the API's, answered by a redirect to
        the ticket (done) or the page again with the refusal next to what was typed."""

        async def post(self, request: Request, ticket_id: str) -> Response:
            read = await read_form(self, request, "Action sur un ticket", f"/tickets/{quote(ticket_id, safe='')}")
            if not isinstance(read, tuple):
                return read
            who, form = read
            action = form.get("action", "")
            command_type = ACTIONS.get(action)
            try:
                if command_type is None:
                    raise BadRequest(422, f"action inconnue : {action!r}", "action")
                fields = actions.action_fields(command_type, None, who.role in actions.DATING_ROLES)
                body = actions.body_from_form(fields, form, tz)
                command = command_from_body(command_type, ticket_id, body, who, actions.posted_form_key(form),
                                            ports.members)
            except BadRequest as exc:
                return refused(self, request, who, ticket_id, action, exc.message, form, exc.status)
            accepted, message, status = await submit(command)
            if accepted:
                return redirect(self, ticket_path(ticket_id, action))
            return refused(self, request, who, ticket_id, action, message, form, status)

    def refused(view: View, request: Request, who: Principal, ticket_id: str, action: str, message: str,
                form: dict[str, str], status: int) -> Response:
        """The ticket page with the refusal inline when this worker holds the ticket; a short
        page linking back to it otherwise (a post is not routed to the ticket's owner)."""
        refusal = {"action": action, "message": message, "values": form,
                   "form_key": actions.posted_form_key(form), "typed": actions.typed(form)}
        ticket = visible_ticket(ports, who, ticket_id)
        if ticket is None:
            return html_response(view, render.action_refused_page(who, ticket_id, refusal), status=status)
        at = now()
        page = render.ticket_page(ticket_view(ticket, ports.policy, at), None, who, at, tz,
                                  token=actions.form_token(session_id(request)), refusal=refusal)
        return html_response(view, page, status=status)

    @app.page("/tickets/{ticket_id}")
    class TicketPage(View):
        async def get(self, request: Request, ticket_id: str) -> Response:
            # Sign-in first, here: a redirect would not survive the hop to another worker.
            if await caller(request) is None:
                return to_login(self, request)
            response = await self.routed(request)
            # Faust rebuilds a page served by the worker owning the ticket without its headers.
            response.headers.update(SECURITY_HEADERS)
            return response

        @app.table_route(table=route_table, match_info="ticket_id")  # type: ignore[arg-type]
        async def routed(self, request: Request) -> Response:
            ticket_id = request.match_info["ticket_id"]
            who = await caller(request)
            if who is None:
                return to_login(self, request)
            ticket = visible_ticket(ports, who, ticket_id)
            if ticket is None:
                return html_response(self, render.ticket_not_found_page(ticket_id, who), status=404)
            at = now()
            view = page_view(ticket, at)
            events: list[Event] | None = None
            archive = ports.archive
            if archive is not None:
                events = await asyncio.get_running_loop().run_in_executor(None, archive.events, ticket_id)
            done_action = ACTIONS.get(request.query.get("fait", ""))
            done_key = str(done_action) if done_action else request.query.get("fait", "")
            return html_response(self, render.ticket_page(view, events, who, at, tz,
                                                          token=actions.form_token(session_id(request)),
                                                          done=french.ACTION_DONE.get(done_key)))

    @app.page("/login")
    class Login(View):
        async def get(self, request: Request) -> Response:
            target = local_next(request.query.get("next"))
            message = None
            if ports.auth is None:  # authentication turned off: nothing to sign in to
                return redirect(self, target)
            if session_id(request):
                if await caller(request) is not None:
                    return redirect(self, target)
                message = "Votre session a expiré ou a été fermée : reconnectez-vous."
            headers = {"Set-Cookie": session_cookie("", secure=ports.secure_cookie)} if message else {}
            return html_response(self, render.login_page(target, message), headers=headers)

        async def post(self, request: Request) -> Response:
            if not same_origin(request):
                return html_response(self, render.refused_page("Connexion"), status=403)
            form = await request.post()
            token = str(form.get("token", "")).strip()
            target = local_next(str(form.get("next", "/")))
            store = ports.auth
            if store is None:
                return redirect(self, target)
            address = caller_address(ports, request)
            try:
                refuse_if_limited(ports.failures, address, "web sign-in")
            except BadRequest as exc:
                return html_response(self, render.login_page(target, exc.message),
                                     status=exc.status, headers=exc.headers)
            opened = None
            if token and len(token) <= MAX_SECRET:
                opened = await asyncio.get_running_loop().run_in_executor(None, store.open_session, token)
            if opened is None:
                ports.failures.failed(address)
                log.warning("web sign-in refused", client=address)
                return html_response(self, render.login_page(target, "Jeton inconnu ou révoqué."), status=401)
            sid, principal = opened
            log.info("web sign-in", role=principal.role, label=principal.label, client=address)
            return redirect(self, target, session_cookie(sid, secure=ports.secure_cookie))

    @app.page("/logout")
    class Logout(View):
        async def post(self, request: Request) -> Response:
            if not same_origin(request):
                return html_response(self, render.refused_page("Déconnexion"), status=403)
            sid = session_id(request)
            if sid and ports.auth is not None:
                await asyncio.get_running_loop().run_in_executor(None, ports.auth.close_session, sid)
            return redirect(self, "/login", session_cookie("", secure=ports.secure_cookie))

    @app.page("/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            content_type = STATIC.get(name)
            if content_type is None:
                return self.json({"error": f"no static file {name!r}"}, status=404)
            return self.bytes(static_asset(name), headers={
                "Content-Type": content_type, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.page("/api/tickets/{ticket_id}/dispute-file")
    class DisputeFile(View):
        """One ticket's dispute file, replayed from the SQL archive like ``slaledger audit
        replay --source archive --ticket``: the whole chain is verified, so it reads the
        whole archive (in a thread)."""

        async def get(self, request: Request, ticket_id: str) -> Response:
            try:
                who = await authenticate(request, cookie=True)
            except BadRequest as exc:
                return self.json({"error": exc.message}, status=exc.status, headers=exc.headers)
            if not who.staff:
                return self.json({"error": "le dossier de contestation est réservé à l'équipe support et aux "
                                           "auditeurs"}, status=403)
            fmt = request.query.get("format", "json")
            if fmt not in DISPUTE_FORMATS:
                return self.json({"error": f"format must be one of {', '.join(DISPUTE_FORMATS)}", "field": "format"},
                                 status=422)
            archive = ports.archive
            if archive is None:
                return self.json({"error": "pas d'archive des événements sur ce serveur "
                                           "(SLALEDGER_DATABASE_URL)"}, status=404)
            rendered = await asyncio.get_running_loop().run_in_executor(None, archive.dispute_file, ticket_id, fmt)
            if rendered is None:
                return self.json({"error": f"ticket {ticket_id} not found in the archive"}, status=404)
            content, ok = rendered
            content_type, ext = DISPUTE_FORMATS[fmt]
            filename = f"dossier-{_SAFE_FILENAME.sub('_', ticket_id)[:64]}.{ext}"
            log.info("dispute file served", ticket_id=ticket_id, format=fmt, actor=who.actor, integrity_ok=ok)
            return self.bytes(content, headers={
                "Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"',
                "X-Slaledger-Integrity": "ok" if ok else "failed", "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff"})
