"""The CLI's token commands as an operator uses them: ``--version``, ``token list`` (never a
secret) and ``--json`` on ``token create|list``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slaledger.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("slaledger 0.")


def test_token_create_and_list_in_json_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database", f"sqlite:///{tmp_path / 'tokens.db'}"]
    assert main(["token", "list", *db]) == 0 and capsys.readouterr().out.strip() == "no token"
    assert main(["token", "create", "--role", "referent", "--member", "commune-de-blois", "--json", *db]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["role"] == "referent" and len(created["secret"]) >= 24
    assert main(["token", "create", "--role", "agent", "--label", "alice", *db]) == 0
    capsys.readouterr()
    assert main(["token", "revoke", created["token_id"], *db]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--json", *db]) == 0
    out = capsys.readouterr().out
    listed = {t["label"]: t for t in json.loads(out)}
    assert set(listed) == {"commune-de-blois", "alice"} and created["secret"] not in out
    assert listed["commune-de-blois"]["revoked_at"] and listed["alice"]["revoked_at"] is None
    assert main(["token", "list", *db]) == 0
    text = capsys.readouterr().out
    assert "referent" in text and "revoked" in text and "live" in text


def test_a_token_provisioned_from_a_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Compose hands Prometheus' token to the provisioning job as a secret file, never in an
    environment; registering it twice is one token."""
    db = ["--database", f"sqlite:///{tmp_path / 'tokens.db'}"]
    secret = tmp_path / "prometheus_token"
    secret.write_text("p" * 32 + "\n")
    for registered in (True, False):
        assert main(["token", "create", "--role", "auditor", "--secret-file", str(secret), "--json", *db]) == 0
        assert json.loads(capsys.readouterr().out) == {"registered": registered}
    assert main(["token", "list", "--json", *db]) == 0
    assert [t["label"] for t in json.loads(capsys.readouterr().out)] == ["prometheus_token"]
    secret.write_text("short")
    assert main(["token", "create", "--role", "auditor", "--secret-file", str(secret), *db]) == 2
    assert "at least 24 characters" in capsys.readouterr().err
    assert main(["token", "create", "--role", "auditor", "--secret-file", str(tmp_path / "none"), *db]) == 2
    assert capsys.readouterr().err.startswith("slaledger: error: ")
