"""Tokens registered from a deployment's secret (Prometheus' scrape token, dev mode's), and
the web sessions opened with a token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, update

from projections.migrate import create_schema
from projections.tokens import (
    SESSIONS,
    SessionLimits,
    TokenError,
    TokenStore,
    create_token,
    digest,
    ensure_token,
    revoke_token,
)

SECRET = "slt_prometheus_" + "x" * 24


def test_a_revoked_secret_is_refused_loudly_not_registered_again(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    assert ensure_token(engine, SECRET, "auditor", "prometheus") is True
    assert ensure_token(engine, SECRET, "auditor", "prometheus") is False
    assert revoke_token(engine, SECRET)
    with pytest.raises(TokenError, match="revoked: set a new secret"):
        ensure_token(engine, SECRET, "auditor", "prometheus")
    assert TokenStore(engine).authenticate(SECRET) is None


def test_labels_fit_an_event_actor(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    with pytest.raises(TokenError, match="label"):
        create_token(engine, "agent", label="x" * 200)
    with pytest.raises(TokenError, match="label"):
        create_token(engine, "agent", label="Alice\x00")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    return engine


def age_session(engine: Engine, session_id: str, *, opened: timedelta, seen: timedelta) -> None:
    """Move a session's times back, as if it had been opened and last used that long ago."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(update(SESSIONS).where(SESSIONS.c.session_hash == digest(session_id))
                     .values(created_at=now - opened, last_seen_at=now - seen))


def sign_in(store: TokenStore, secret: str) -> str:
    opened = store.open_session(secret)
    assert opened is not None
    return opened[0]


def test_a_session_is_a_random_id_stored_hashed_and_ended_by_sign_out(engine: Engine) -> None:
    token_id, secret = create_token(engine, "referent", "commune-de-blois")
    store = TokenStore(engine)
    assert store.open_session("slt_wrong") is None
    opened = store.open_session(secret)
    assert opened is not None
    session_id, principal = opened
    assert principal.token_id == token_id and session_id != secret and len(session_id) >= 43
    with engine.connect() as conn:
        stored = conn.execute(select(SESSIONS.c.session_hash, SESSIONS.c.token_id)).all()
    assert [tuple(r) for r in stored] == [(digest(session_id), token_id)]  # the id itself is not stored
    assert store.session(session_id) == principal
    assert store.session(secret) is None  # the token is no session id
    second = sign_in(store, secret)
    store.close_session(session_id)
    assert store.session(session_id) is None
    assert store.session(second) == principal  # another sign-in of the same token lives on


def test_revoking_the_token_ends_its_sessions_at_once(engine: Engine) -> None:
    _, secret = create_token(engine, "agent", label="alice")
    store = TokenStore(engine)
    session_id = sign_in(store, secret)
    assert store.session(session_id) is not None
    assert revoke_token(engine, secret)
    assert store.session(session_id) is None  # no cache: not even the token cache's 5 s
    assert store.open_session(secret) is None


def test_a_session_ends_when_idle_or_old(engine: Engine) -> None:
    _, secret = create_token(engine, "agent", label="alice")
    store = TokenStore(engine, sessions=SessionLimits(idle=timedelta(minutes=30), lifetime=timedelta(hours=12)))
    idle, old, used = (sign_in(store, secret) for _ in range(3))
    age_session(engine, idle, opened=timedelta(hours=1), seen=timedelta(minutes=31))
    age_session(engine, old, opened=timedelta(hours=12, seconds=1), seen=timedelta(seconds=1))
    age_session(engine, used, opened=timedelta(hours=11), seen=timedelta(minutes=29))
    assert store.session(idle) is None
    assert store.session(old) is None
    assert store.session(used) is not None  # used within the idle limit: its idle time starts again
    with engine.connect() as conn:
        seen = conn.execute(select(SESSIONS.c.last_seen_at)).scalar_one()  # the expired ones are deleted
    assert datetime.now(UTC) - seen.replace(tzinfo=UTC) < timedelta(minutes=1)
