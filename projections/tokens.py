"""API tokens: created and revoked from the CLI, checked by every worker.

The secret (``slt_…``) is printed once; only its SHA-256 is stored. A token authenticates
as a ``service.principal.Principal`` (a plain value, with the roles and what they may do).

The web view signs in with a token and gets a session instead (``TokenStore.open_session``):
its cookie holds a random id, stored hashed in ``web_sessions``, so that signing out ends it
for good and the token itself never sits in a browser.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, insert, or_, select, update

from service.principal import ROLES, SIGN_IN, Principal
from sla.events import CONTROL_CHARACTERS, MAX_ACTOR

from .models import TokenRow, WebSessionRow

TOKENS: Table = TokenRow.__table__  # type: ignore[assignment]
SESSIONS: Table = WebSessionRow.__table__  # type: ignore[assignment]


class TokenError(ValueError):
    pass


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, role: str, member: str | None = None, label: str | None = None,
                 secret: str | None = None) -> tuple[str, str]:
    """Returns (token id, secret). A referent needs a member; other roles take none."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}")
    if role == "referent" and not member:
        raise TokenError("a referent token needs --member")
    if role != "referent" and member:
        raise TokenError("only a referent token is tied to a member")
    label = label or member or role
    longest = MAX_ACTOR - len(role) - 1
    if len(label) > longest or CONTROL_CHARACTERS.search(label):
        raise TokenError(f"label: at most {longest} characters, no control character")
    token_id = str(uuid.uuid4())
    secret = secret or "slt_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(TOKENS).values(
            token_id=token_id, token_hash=digest(secret), role=role, member=member,
            label=label, created_at=datetime.now(UTC)))
    return token_id, secret


def ensure_token(engine: Engine, secret: str, role: str, label: str, member: str | None = None) -> bool:
    """Register ``secret`` if it is not known yet (dev mode's SLALEDGER_DEV_TOKEN, a deployment's
    Prometheus token); returns whether it was registered now."""
    with engine.connect() as conn:
        known = conn.execute(select(TOKENS.c.token_id, TOKENS.c.revoked_at)
                             .where(TOKENS.c.token_hash == digest(secret))).first()
    if known is None:
        create_token(engine, role, member, label=label, secret=secret)
        return True
    if known.revoked_at is not None:  # a revoked secret never comes back: say so, do not 401 forever
        raise TokenError(f"this secret belongs to token {known.token_id}, revoked: set a new secret")
    return False


def token_is_live(engine: Engine, secret: str, role: str | None = None) -> bool:
    """Whether ``secret`` is a registered token that is not revoked (and has ``role``)."""
    with engine.connect() as conn:
        row = conn.execute(select(TOKENS.c.revoked_at, TOKENS.c.role)
                           .where(TOKENS.c.token_hash == digest(secret))).first()
    return row is not None and row.revoked_at is None and (role is None or row.role == role)


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    """Every token, newest first, without its secret (only its hash is stored anyway)."""
    with engine.connect() as conn:
        rows = conn.execute(select(TOKENS.c.token_id, TOKENS.c.role, TOKENS.c.member, TOKENS.c.label,
                                   TOKENS.c.created_at, TOKENS.c.revoked_at).order_by(TOKENS.c.created_at.desc()))
        return [{"token_id": r.token_id, "role": r.role, "member": r.member, "label": r.label,
                 "created_at": _iso(r.created_at), "revoked_at": _iso(r.revoked_at)} for r in rows]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return _aware(value).isoformat()


def _aware(value: datetime) -> datetime:
    """SQLite gives back naive datetimes (stored as UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def revoke_token(engine: Engine, token: str) -> bool:
    """Revoke by token id or by secret; returns whether a live token was revoked."""
    with engine.begin() as conn:
        done = conn.execute(update(TOKENS).where(
            or_(TOKENS.c.token_id == token, TOKENS.c.token_hash == digest(token)),
            TOKENS.c.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC)))
    return bool(done.rowcount)


@dataclass(frozen=True)
class SessionLimits:
    """How long a web session lives: ``idle`` without a request, ``lifetime`` at most."""

    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=12)

    @property
    def touch(self) -> timedelta:
        """How stale ``last_seen_at`` may get before a request writes it again (a write per
        page would be a write per request; the idle limit is kept to within this)."""
        return min(timedelta(minutes=1), self.idle / 4)


class TokenStore:
    """Checks bearer secrets against the database, with a short cache (revocation takes
    effect within ``ttl`` seconds on every worker), and the web sessions opened with them
    (not cached: a signed-out or revoked session ends at once on every worker)."""

    def __init__(self, engine: Engine, ttl: float = 5.0, sessions: SessionLimits | None = None) -> None:
        self.engine, self.ttl = engine, ttl
        self.limits = sessions or SessionLimits()
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def authenticate(self, secret: str) -> Principal | None:
        key = digest(secret)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(select(TOKENS).where(TOKENS.c.token_hash == key)).first()
        principal = None
        if row is not None and row.revoked_at is None:
            principal = Principal(row.token_id, row.role, row.member, row.label)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, principal)
        return principal

    def open_session(self, secret: str) -> tuple[str, Principal] | None:
        """Sign in with a token: a new session id (to put in the cookie; only its hash is
        stored) and its principal, or None when the token is unknown or revoked. Sessions
        past their limits are deleted on the way."""
        with self.engine.connect() as conn:
            row = conn.execute(select(TOKENS).where(TOKENS.c.token_hash == digest(secret))).first()
        if row is None or row.revoked_at is not None or row.role not in SIGN_IN:
            return None  # a metrics token opens no web session
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(delete(SESSIONS).where(or_(SESSIONS.c.created_at < now - self.limits.lifetime,
                                                    SESSIONS.c.last_seen_at < now - self.limits.idle)))
            conn.execute(insert(SESSIONS).values(session_hash=digest(session_id), token_id=row.token_id,
                                                 created_at=now, last_seen_at=now))
        return session_id, Principal(row.token_id, row.role, row.member, row.label)

    def session(self, session_id: str) -> Principal | None:
        """The principal of a live session (None: unknown, signed out, expired, or its token
        revoked); a use moves its idle limit on."""
        key = digest(session_id)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            row = conn.execute(select(SESSIONS.c.created_at.label("opened_at"), SESSIONS.c.last_seen_at, TOKENS)
                               .join(TOKENS, TOKENS.c.token_id == SESSIONS.c.token_id)
                               .where(SESSIONS.c.session_hash == key)).first()
            if row is None:
                return None
            seen = _aware(row.last_seen_at)
            if (row.revoked_at is not None or now - seen >= self.limits.idle
                    or now - _aware(row.opened_at) >= self.limits.lifetime):
                conn.execute(delete(SESSIONS).where(SESSIONS.c.session_hash == key))
                return None
            if now - seen >= self.limits.touch:
                conn.execute(update(SESSIONS).where(SESSIONS.c.session_hash == key).values(last_seen_at=now))
        return Principal(row.token_id, row.role, row.member, row.label)

    def close_session(self, session_id: str) -> None:
        """Sign out: the session id is worthless from now on, on every worker."""
        with self.engine.begin() as conn:
            conn.execute(delete(SESSIONS).where(SESSIONS.c.session_hash == digest(session_id)))
