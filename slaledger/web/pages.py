"""The web view: the queue and each ticket's SLA story, as server-rendered HTML.

Grafana is the support team's cockpit, but it cannot tell one ticket's story, referents
have no Grafana account, and a newcomer running ``slaledger dev`` should see the product
rather than JSON. So the worker's own web server (same process and port as the API)
serves a few pages, built from the API's own data paths: the caller's authentication,
``find_tickets`` for the queue, ``visible_ticket`` on the ticket's owner for a ticket,
``ticket_view`` for its shape, and the API's command path (``commands.py``) for the forms.
The pages therefore cannot show or do what the API would refuse.

No build step: the HTML comes from Jinja2 templates with autoescape (``render.py`` and
``templates/``; this module holds the views only), with one stylesheet and one small
script under ``slaledger/web/static/`` (served here, so a strict Content-Security-Policy
holds). Without the script the pages still work; with it, countdowns tick every second
and the queue refreshes every few seconds without a full reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from faust.web import Request, Response

from sla import french
from sla.events import KINDS, Event
from sla.ticket import OPEN_STATUSES, Ticket
from sla.view import ticket_view

from . import actions, render
from .access import BadRequest, find_tickets, session_id, taken_back, visible_ticket
from .browser import SECURITY_HEADERS, PageView, html_response, redirect
from .clocks import queue_sort_key
from .commands import ACTIONS, command_from_body, filing_command, send
from .ports import Principal

QUEUE_LIMIT = 300  # rows shown; the count says how many matched
REFRESH_SECONDS = 5
STATIC = {"web.css": "text/css; charset=utf-8", "web.js": "text/javascript; charset=utf-8"}


def queue_filters(query: Mapping[str, str], who: Principal) -> dict[str, str]:
    """The filters understood by the queue; anything else is ignored (a page never 422s)."""
    member = query.get("member", "").strip()[:128]
    kind = query.get("kind", "")
    state = query.get("sla", "")
    return {
        "member": (who.member or "") if who.referent else member,
        "kind": kind if kind in KINDS else "",
        "sla": state if state in render.FILTER_STATES else "",
    }


def ticket_path(ticket_id: str, done: str) -> str:
    return f"/tickets/{quote(ticket_id, safe='')}?{urlencode({'fait': done})}#actions"


@cache
def static_asset(name: str) -> bytes:
    return (resources.files("slaledger.web") / "static" / name).read_bytes()


class TicketsPageView(PageView):
    """A page that shows tickets, under their members' names (pages show names, not ids)."""

    def member_name(self, member: str) -> str:
        """What a page shows for a member: its name in the directory, else the id as stored."""
        members = self.ports.members
        return members.name(member) if members is not None else member

    def page_view(self, ticket: Ticket, at: datetime) -> dict[str, Any]:
        """The API's view of a ticket, with its member's name."""
        view = ticket_view(ticket, self.ports.policy, at)
        view["member_name"] = self.member_name(ticket.member)
        return view

    async def queue_views(self, who: Principal, filters: dict[str, str],
                          at: datetime) -> tuple[list[dict[str, Any]], int]:
        found = await find_tickets(self.ports, who, at, statuses=OPEN_STATUSES, member=filters["member"] or None,
                                   sla_status=filters["sla"] or None)
        views = [self.page_view(t, at) for t in found if not filters["kind"] or t.kind == filters["kind"]]
        views.sort(key=queue_sort_key)
        return views[:QUEUE_LIMIT], len(views)


class QueuePage(TicketsPageView):
    async def get(self, request: Request) -> Response:
        who = await self.caller(request)
        if who is None:
            return self.to_login(request)
        at = self.edge.now()
        filters = queue_filters(request.query, who)
        views, total = await self.queue_views(who, filters, at)
        members: dict[str, str] = {}
        if not who.referent:
            members = {t.member: self.member_name(t.member)
                       for t in await find_tickets(self.ports, who, at, statuses=OPEN_STATUSES) if t.member}
        fragment = "/fragments/queue?" + urlencode({k: v for k, v in filters.items() if v})
        return html_response(self, render.queue_page(who, filters, members, views, total, at, self.edge.tz,
                                                     fragment=fragment, refresh=REFRESH_SECONDS))


class QueueFragment(TicketsPageView):
    async def get(self, request: Request) -> Response:
        who = await self.caller(request)
        if who is None:
            return html_response(self, render.session_expired(), status=401)
        at = self.edge.now()
        filters = queue_filters(request.query, who)
        views, total = await self.queue_views(who, filters, at)
        return html_response(self, render.queue_table(views, total, at, self.edge.tz))


class TicketPage(TicketsPageView):
    async def get(self, request: Request, ticket_id: str) -> Response:
        # Sign-in first, here: a redirect would not survive the hop to another worker.
        who = await self.caller(request)
        if who is None:
            return self.to_login(request)
        response = await self.on_owner(request, lambda: self.story(request, who, ticket_id))
        # Faust rebuilds a page served by the worker owning the ticket without its headers.
        response.headers.update(SECURITY_HEADERS)
        return response

    async def story(self, request: Request, who: Principal, ticket_id: str) -> Response:
        ticket = visible_ticket(self.ports, who, ticket_id)
        if ticket is None and taken_back(self.ports, ticket_id):
            response = html_response(self, render.ticket_taken_back_page(ticket_id, who), status=503)
            response.headers["Retry-After"] = "1"
            return response
        if ticket is None:
            return html_response(self, render.ticket_not_found_page(ticket_id, who), status=404)
        at = self.edge.now()
        events: list[Event] | None = None
        archive = self.ports.archive
        if archive is not None:
            events = await asyncio.get_running_loop().run_in_executor(None, archive.events, ticket_id)
        done_action = ACTIONS.get(request.query.get("fait", ""))
        done_key = str(done_action) if done_action else request.query.get("fait", "")
        return html_response(self, render.ticket_page(self.page_view(ticket, at), events, who, at, self.edge.tz,
                                                      token=actions.form_token(session_id(request)),
                                                      done=french.ACTION_DONE.get(done_key)))


class NewTicket(PageView):
    """The filing form; a refused filing is shown again with what was typed and its key
    (sent again, it is the same filing)."""

    def suggestions(self) -> dict[str, list[str]]:
        """What the member and product inputs propose (``<datalist>``): the names."""
        members = self.ports.members
        return {"member": [e.name for e in members.entries] if members is not None else [],
                "product": [e.name for e in self.ports.policy.products.entries]}

    async def get(self, request: Request) -> Response:
        who = await self.caller(request)
        if who is None:
            return self.to_login(request)
        if not actions.may_file(who):
            return html_response(self, render.refused_page("Nouvelle demande"), status=403)
        return html_response(self, render.new_ticket_page(who, token=actions.form_token(session_id(request)),
                                                          suggestions=self.suggestions()))

    async def post(self, request: Request) -> Response:
        read = await self.read_form(request, "Nouvelle demande", "/new-ticket")
        if not isinstance(read, tuple):
            return read
        who, form = read
        key = actions.posted_form_key(form)
        try:
            command = filing_command(actions.filing_body(who, form, self.edge.tz), who, key, self.ports.members)
        except BadRequest as exc:
            return self.refused(request, who, form, key, exc.message, exc.status)
        sent = await send(self.ports, command)
        if not sent.accepted:
            return self.refused(request, who, form, key, sent.refusal, sent.status)
        return redirect(self, ticket_path(command.ticket_id, "file"))

    def refused(self, request: Request, who: Principal, form: dict[str, str], key: str | None, message: str,
                status: int) -> Response:
        page = render.new_ticket_page(who, token=actions.form_token(session_id(request)), values=form,
                                      refusal=message, form_key=key, suggestions=self.suggestions())
        return html_response(self, page, status=status)


class TicketActions(PageView):
    """An action posted from the ticket page: sent like the API's, answered by a redirect to
    the ticket (done) or the page again with the refusal next to what was typed."""

    async def post(self, request: Request, ticket_id: str) -> Response:
        read = await self.read_form(request, "Action sur un ticket", f"/tickets/{quote(ticket_id, safe='')}")
        if not isinstance(read, tuple):
            return read
        who, form = read
        action = form.get("action", "")
        command_type = ACTIONS.get(action)
        try:
            if command_type is None:
                raise BadRequest(422, f"action inconnue : {action!r}", "action")
            fields = actions.action_fields(command_type, None, who.dates_facts)
            body = actions.body_from_form(fields, form, self.edge.tz)
            command = command_from_body(command_type, ticket_id, body, who, actions.posted_form_key(form),
                                        self.ports.members)
        except BadRequest as exc:
            return self.refused(request, who, ticket_id, action, exc.message, form, exc.status)
        sent = await send(self.ports, command)
        if sent.accepted:
            return redirect(self, ticket_path(ticket_id, action))
        return self.refused(request, who, ticket_id, action, sent.refusal, form, sent.status)

    def refused(self, request: Request, who: Principal, ticket_id: str, action: str, message: str,
                form: dict[str, str], status: int) -> Response:
        """The ticket page with the refusal inline when this worker holds the ticket; a short
        page linking back to it otherwise (a post is not routed to the ticket's owner)."""
        refusal = {"action": action, "message": message, "values": form,
                   "form_key": actions.posted_form_key(form), "typed": actions.typed(form)}
        ticket = visible_ticket(self.ports, who, ticket_id)
        if ticket is None:
            return html_response(self, render.action_refused_page(who, ticket_id, refusal), status=status)
        at = self.edge.now()
        page = render.ticket_page(ticket_view(ticket, self.ports.policy, at), None, who, at, self.edge.tz,
                                  token=actions.form_token(session_id(request)), refusal=refusal)
        return html_response(self, page, status=status)


class Static(PageView):
    async def get(self, request: Request, name: str) -> Response:
        content_type = STATIC.get(name)
        if content_type is None:
            raise BadRequest(404, f"no static file {name!r}")
        return self.bytes(static_asset(name), headers={
            "Content-Type": content_type, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
