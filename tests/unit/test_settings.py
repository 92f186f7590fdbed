"""Settings from the environment: a mistyped flag is an error, not a silent "off", and the
start log masks every credential, in URLs too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slaledger.settings import Settings


@pytest.mark.parametrize("value", ["enabled", "y", "oui", "2"])
def test_a_boolean_that_is_not_one_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="SLALEDGER_AUTH"):
        Settings.from_env({"SLALEDGER_AUTH": value})


def test_booleans() -> None:
    assert Settings.from_env({"SLALEDGER_AUTH": "off"}).auth is False
    assert Settings.from_env({"SLALEDGER_AUTH": " True "}).auth is True


def test_no_credential_reaches_the_start_log() -> None:
    settings = Settings.from_env({
        "SLALEDGER_DATABASE_URL": "postgresql+psycopg://app:DbS3cret@db/slaledger?sslmode=require&password=Q1",
        "SLALEDGER_ALERTMANAGER_URL": "https://am:AmS3cret@alertmanager:9093",
        "SLALEDGER_ITOP_URL": "https://itop:ItopS3cret@itop.example/webservices/rest.php",
        "SLALEDGER_BROKER_URL": "kafka://user:KafkaS3cret@k1:9092,k2:9092",
        "SLALEDGER_ITOP_PASSWORD": "pw", "SLALEDGER_KAFKA_SASL_PASSWORD": "pw2",
    })
    logged = json.dumps(settings.public())
    for secret in ("DbS3cret", "Q1", "AmS3cret", "ItopS3cret", "KafkaS3cret", '"pw"', '"pw2"'):
        assert secret not in logged, secret
    assert "alertmanager:9093" in logged and "k1:9092,k2:9092" in logged


def test_cli_port_values() -> None:
    """0 turns the projector's metrics server off; beyond 65535 is a usage error (exit 2)."""
    from slaledger.cli import build_parser
    from slaledger.cli_common import UsageError, command_settings

    assert command_settings(build_parser().parse_args(["project", "--metrics-port", "0"])).metrics_port == 0
    with pytest.raises(UsageError, match="not a TCP port"):
        command_settings(build_parser().parse_args(["project", "--metrics-port", "70000"]))


def test_a_secret_is_read_from_its_file_and_the_database_url_gets_the_password(tmp_path: Path) -> None:
    """Compose secrets are files: SLALEDGER_<NAME>_FILE, for secrets only."""
    (tmp_path / "pw").write_text("s3cr:t/@é\n")
    settings = Settings.from_env({"SLALEDGER_DATABASE_URL": "postgresql+psycopg://slaledger@postgres:5432/slaledger",
                                  "SLALEDGER_DATABASE_PASSWORD_FILE": str(tmp_path / "pw"),
                                  "SLALEDGER_ITOP_TOKEN_FILE": str(tmp_path / "pw"),
                                  "SLALEDGER_ITOP_USER_FILE": str(tmp_path / "pw")})
    assert settings.database_password == settings.itop_token == "s3cr:t/@é"
    assert settings.itop_user == ""  # not a secret: no _FILE
    from sqlalchemy.engine import make_url

    url = make_url(settings.database)
    assert (url.username, url.password, url.host, url.database) == ("slaledger", "s3cr:t/@é", "postgres", "slaledger")
    assert "s3cr" not in json.dumps(settings.public())
    # The variable itself wins over the file; a missing file is an error, not an empty password.
    assert Settings.from_env({"SLALEDGER_ITOP_TOKEN": "direct",
                              "SLALEDGER_ITOP_TOKEN_FILE": str(tmp_path / "pw")}).itop_token == "direct"
    with pytest.raises(ValueError, match="SLALEDGER_DATABASE_PASSWORD_FILE"):
        Settings.from_env({"SLALEDGER_DATABASE_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="needs a user"):
        _ = Settings.from_env({"SLALEDGER_DATABASE_URL": "postgresql+psycopg://postgres/slaledger",
                               "SLALEDGER_DATABASE_PASSWORD": "x"}).database
