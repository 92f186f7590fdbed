"""``/api/tickets/{id}/dispute-file``: one ticket's dispute file, for the support team and the
auditors. An API route that also takes the pages' session cookie: the ticket page links to
it, and a browser link cannot send a bearer token. It reads, it never sends a command.
"""

from __future__ import annotations

import asyncio
import re

import structlog
from faust.web import Request, Response

from .access import BadRequest
from .edge import EdgeView

log = structlog.get_logger(__name__)

DISPUTE_FORMATS = {"json": ("application/json; charset=utf-8", "json"), "md": ("text/markdown; charset=utf-8", "md"),
                   "html": ("text/html; charset=utf-8", "html"), "pdf": ("application/pdf", "pdf")}
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]")


class DisputeFile(EdgeView):
    """One ticket's dispute file, replayed from the SQL archive like ``slaledger audit
    replay --source archive --ticket``: the whole chain is verified, so it reads the
    whole archive (in a thread)."""

    async def get(self, request: Request, ticket_id: str) -> Response:
        who = await self.edge.authenticate(request, cookie=True)
        if not who.staff:
            raise BadRequest(403, "le dossier de contestation est réservé à l'équipe support et aux auditeurs")
        fmt = request.query.get("format", "json")
        if fmt not in DISPUTE_FORMATS:
            raise BadRequest(422, f"format must be one of {', '.join(DISPUTE_FORMATS)}", "format")
        archive = self.ports.archive
        if archive is None:
            raise BadRequest(404, "pas d'archive des événements sur ce serveur (SLALEDGER_DATABASE_URL)")
        rendered = await asyncio.get_running_loop().run_in_executor(None, archive.dispute_file, ticket_id, fmt)
        if rendered is None:
            raise BadRequest(404, f"ticket {ticket_id} not found in the archive")
        content, ok = rendered
        content_type, ext = DISPUTE_FORMATS[fmt]
        filename = f"dossier-{_SAFE_FILENAME.sub('_', ticket_id)[:64]}.{ext}"
        log.info("dispute file served", ticket_id=ticket_id, format=fmt, actor=who.actor, integrity_ok=ok)
        return self.bytes(content, headers={
            "Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Slaledger-Integrity": "ok" if ok else "failed", "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})
