"""Tokens registered from a deployment's secret (Prometheus' scrape token, dev mode's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from projections.migrate import create_schema
from projections.tokens import TokenError, TokenStore, create_token, ensure_token, revoke_token

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
