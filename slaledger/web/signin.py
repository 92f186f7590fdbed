"""Signing in and out of the pages.

Sign-in posts the same token as the API and opens a server-side session (``TokenStore.
open_session``): the HttpOnly, SameSite=Strict cookie holds the session's random id, never
the token; sign-out deletes the session, and it ends by itself when idle or old
(``SLALEDGER_WEB_SESSION_IDLE`` / ``_LIFETIME``) or when its token is revoked. The cookie is
``Secure`` when the public URL (``SLALEDGER_PUBLIC_URL``) is https: configuration, never a
request header. Refused sign-ins count against the client's address like refused bearer
tokens (``throttle.py``).
"""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import structlog
from faust.web import Request, Response

from . import render
from .access import MAX_SECRET, SESSION_COOKIE, BadRequest, caller_address, refuse_if_limited, session_id
from .browser import PageView, html_response, local_next, redirect, same_origin

log = structlog.get_logger(__name__)


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


class Login(PageView):
    async def get(self, request: Request) -> Response:
        target = local_next(request.query.get("next"))
        message = None
        if self.ports.auth is None:  # authentication turned off: nothing to sign in to
            return redirect(self, target)
        if session_id(request):
            if await self.caller(request) is not None:
                return redirect(self, target)
            message = "Votre session a expiré ou a été fermée : reconnectez-vous."
        headers = {"Set-Cookie": session_cookie("", secure=self.ports.secure_cookie)} if message else {}
        return html_response(self, render.login_page(target, message), headers=headers)

    async def post(self, request: Request) -> Response:
        if not same_origin(request):
            return html_response(self, render.refused_page("Connexion"), status=403)
        form = await request.post()
        token = str(form.get("token", "")).strip()
        target = local_next(str(form.get("next", "/")))
        store = self.ports.auth
        if store is None:
            return redirect(self, target)
        address = caller_address(self.ports, request)
        try:
            refuse_if_limited(self.ports.failures, address, "web sign-in")
        except BadRequest as exc:
            return html_response(self, render.login_page(target, exc.message),
                                 status=exc.status, headers=exc.headers)
        opened = None
        if token and len(token) <= MAX_SECRET:
            opened = await asyncio.get_running_loop().run_in_executor(None, store.open_session, token)
        if opened is None:
            self.ports.failures.failed(address)
            log.warning("web sign-in refused", client=address)
            return html_response(self, render.login_page(target, "Jeton inconnu ou révoqué."), status=401)
        sid, principal = opened
        log.info("web sign-in", role=principal.role, label=principal.label, client=address)
        return redirect(self, target, session_cookie(sid, secure=self.ports.secure_cookie))


class Logout(PageView):
    async def post(self, request: Request) -> Response:
        if not same_origin(request):
            return html_response(self, render.refused_page("Déconnexion"), status=403)
        sid = session_id(request)
        if sid and self.ports.auth is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.ports.auth.close_session, sid)
        return redirect(self, "/login", session_cookie("", secure=self.ports.secure_cookie))

