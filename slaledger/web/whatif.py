"""The admins' what-if page (#29): a draft policy of the configured directory
(``SLALEDGER_POLICY_DRAFTS_DIR``) tried on a period of the SQL archive, optionally one
member's tickets; the same comparison as ``slaledger audit what-if``, each ticket linked to
its page. Admin role only (403 for any other role, sign-in first); it writes nothing.

Kept apart from ``pages.py``: it only needs the caller, the ``whatif`` port and the pages'
response helpers (``browser.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import structlog
from faust.web import Request, Response

from sla.policy import PolicyError

from . import render
from .browser import PageView, html_response, local_next, redirect

log = structlog.get_logger(__name__)
PATH = "/admin/what-if"


class FormError(ValueError):
    """A choice of the form that cannot be compared (French, shown on the page)."""


def read_choice(query: Mapping[str, str], drafts: list[str], tz: ZoneInfo) -> tuple[str, str | None, datetime,
                                                                                      datetime] | None:
    """(draft, member, from, to) of the form — None until a draft is chosen; FormError when
    a field is wrong. Dates are local days: from the first at 00:00 to the day after the last."""
    draft = query.get("draft", "")
    if not draft:
        return None
    if draft not in drafts:
        raise FormError("Projet inconnu : choisissez-en un dans la liste.")
    try:
        first, last = date.fromisoformat(query.get("from", "")), date.fromisoformat(query.get("to", ""))
    except ValueError:
        raise FormError("Période : deux dates AAAA-MM-JJ (du … au …).") from None
    if last < first:
        raise FormError("Période : la date de fin précède la date de début.")
    if (last - first).days > 366:
        raise FormError("Période : un an au plus.")
    member = query.get("member", "").strip()[:128] or None
    start = datetime.combine(first, time(0), tzinfo=tz)
    end = datetime.combine(date.fromordinal(last.toordinal() + 1), time(0), tzinfo=tz)
    return draft, member, start, end


class WhatIfPage(PageView):
    """Attached only when the worker has drafts and an archive (``ports.whatif``)."""

    async def get(self, request: Request) -> Response:
        who = await self.caller(request)
        if who is None:
            return redirect(self, "/login?" + urlencode({"next": local_next(request.rel_url.path_qs)}))
        if who.role != "admin":
            log.warning("what-if page refused", actor=who.actor)
            return html_response(self, render.refused_page("Simulation d'une politique"), status=403)
        port = self.ports.whatif
        assert port is not None  # attached only with one (``slaledger.web.register``)
        tz = self.ports.policy.versions[-1].tz
        query = {k: str(v) for k, v in request.query.items()}
        loop = asyncio.get_running_loop()
        drafts = await loop.run_in_executor(None, port.drafts)
        doc: dict[str, Any] | None = None
        error = None
        status = 200
        try:
            choice = read_choice(query, drafts, tz)
            if choice is not None:
                found = await loop.run_in_executor(None, port.compare, *choice)
                log.info("what-if compared", actor=who.actor, draft=choice[0], member=choice[1],
                         changes=len(found["changes"]))
                doc = found
        except (FormError, PolicyError) as exc:
            error, status = str(exc), 400
        page = render.env.get_template("whatif.html").render(who=who, server_now=None, drafts=drafts,
                                                             query=query, doc=doc, error=error, tz=tz)
        return html_response(self, page, status=status)
