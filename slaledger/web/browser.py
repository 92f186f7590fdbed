"""What every page answers a browser: the security headers, redirects, the hop to sign-in,
and the checks on a posted form (the session's caller, this site, the form token).

Sign-in posts the same token as the API and opens a server-side session (``signin.py``);
reads accept its cookie, and so do the pages' own forms, which must also carry the
session's form token and come from this site (``actions.form_token``).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import structlog
from faust.web import Request, Response, View

from . import actions, render
from .access import BadRequest, session_id
from .edge import EdgeView
from .ports import Principal

log = structlog.get_logger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def local_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):  # browsers drop tab/CR/LF: "/\t/x" is "//x"
        return "/"
    return value


def html_response(view: View, body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return view.html(body, status=status, headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(view: View, location: str, cookie: str | None = None) -> Response:
    headers = {**SECURITY_HEADERS, "Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return view.text("", status=303, headers=headers)


def same_origin(request: Request) -> bool:
    """A form post from this site: SameSite keeps the cookie from other sites, this keeps
    them from signing a browser in or out behind its user's back."""
    origin = request.headers.get("Origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("Host", "")


class PageView(EdgeView):
    """A view that answers a browser: the caller from the session cookie (or a bearer token)."""

    async def caller(self, request: Request) -> Principal | None:
        try:
            return await self.edge.authenticate(request, cookie=True)
        except BadRequest:
            return None

    def to_login(self, request: Request) -> Response:
        target = local_next(request.rel_url.path_qs)
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and not session_id(request):
            # A link from elsewhere (an alert, a mail): the SameSite=Strict cookie was held
            # back. Going on from this page is a same-site navigation, which carries it.
            return html_response(self, render.redirect_page(target))
        return redirect(self, "/login?" + urlencode({"next": target}))

    async def read_form(self, request: Request, title: str, back: str) -> tuple[Principal, dict[str, str]] | Response:
        """The caller and the fields of a page's form, or the answer to a post that cannot be
        theirs: no session (sign in, then back to the page ``back``, not to the post's
        address), another site, or no valid form token (403)."""
        who = await self.caller(request)
        if who is None:
            return redirect(self, "/login?" + urlencode({"next": back}))
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not same_origin(request) or not actions.form_token_ok(session_id(request), form.get("form_token", "")):
            log.warning("form post refused: other site or missing form token", path=request.url.path, actor=who.actor)
            return html_response(self, render.refused_page(title), status=403)
        return who, form
