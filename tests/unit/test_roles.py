"""The grants map and the SCRAM verifiers of ``projections.roles`` (no database: the
integration test ``tests/integration/test_db_roles.py`` applies them to PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from projections.models import Base
from projections.roles import DEFAULT_NAMES, GRANTS, LOGIN_ROLES, PASSWORD_FILES, RolesError, role_names, scram_verifier
from slaledger.cli import main


def test_the_verifier_answers_the_rfc_7677_exchange() -> None:
    """RFC 7677's SCRAM-SHA-256 example (user, "pencil"): the client's proof checks against
    the stored key, and the server's signature is the one the RFC shows."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    assert method == "SCRAM-SHA-256" and params == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            f"c=biws,r={nonce}").encode()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.digest(stored, auth, "sha256"), strict=True))
    assert hashlib.sha256(client_key).digest() == stored
    assert base64.b64encode(hmac.digest(server, auth, "sha256")) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert scram_verifier("pencil") != scram_verifier("pencil")  # a fresh salt each time


def test_every_table_is_decided_and_every_grant_names_a_table() -> None:
    tables = set(Base.metadata.tables) | {"alembic_version"}
    granted = {table for kind in LOGIN_ROLES for table in GRANTS[kind]}
    assert granted - tables <= {"web_sessions"}  # the web's sessions (#25) come with their own migration
    assert set(GRANTS) == set(LOGIN_ROLES) == set(PASSWORD_FILES)
    # nobody changes or removes archived events, tree nodes or judgments
    for kind in LOGIN_ROLES:
        for table in ("event_archive", "merkle_nodes", "sla_judgments"):
            assert not {"UPDATE", "DELETE", "TRUNCATE"} & set(GRANTS[kind].get(table, "").replace(",", " ").split())
    assert [kind for kind in LOGIN_ROLES if "INSERT" in GRANTS[kind].get("event_archive", "")] == ["projector"]
    assert "api_tokens" not in GRANTS["grafana"] and "event_archive" not in GRANTS["grafana"]


def test_role_names() -> None:
    assert role_names() == DEFAULT_NAMES and DEFAULT_NAMES["grafana"] == "grafana_ro"
    assert role_names("t1_")["worker"] == "t1_worker"
    with pytest.raises(RolesError):
        role_names('x"; DROP ROLE postgres; --')


def test_the_job_names_a_missing_or_short_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any connection (the URL's server is not even there)."""
    argv = ["db", "migrate", "--database", "postgresql+psycopg://postgres@127.0.0.1:1/none",
            "--passwords", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"slaledger: error: {tmp_path / 'db_projector_password'}: No such file or directory: "
                   "the password of the slaledger_projector role\n")
    for name in PASSWORD_FILES.values():
        (tmp_path / name).write_text("long-enough-password\n")
    (tmp_path / "grafana_db_password").write_text("short\n")
    assert main(argv) == 2
    assert "grafana_db_password: the password of the grafana_ro role needs at least 16 characters" in \
        capsys.readouterr().err


def test_without_postgresql_the_job_only_migrates(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLALEDGER_DATABASE_URL", raising=False)
    assert main(["db", "migrate", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "schema migrated (no roles outside PostgreSQL)\n"
    assert (tmp_path / "slaledger.db").exists()
