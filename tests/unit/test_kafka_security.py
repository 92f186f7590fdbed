"""Kafka TLS/SASL settings reach every client library with the right spelling.

No TLS or SASL broker runs here: the mapping from ``SLALEDGER_KAFKA_*`` to the options of
kafka-python, aiokafka and Faust is what can go wrong silently, so it is what is checked.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from slaledger.settings import Settings
from streams import kafka_security as ks


def settings(**env: str) -> Settings:
    return Settings.from_env({f"SLALEDGER_{k.upper()}": v for k, v in env.items()})


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    """A self-signed certificate and its key (also used as the CA file)."""
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=slaledger-test"], check=True, capture_output=True)
    return {"kafka_ssl_cafile": str(cert), "kafka_ssl_certfile": str(cert), "kafka_ssl_keyfile": str(key)}


def test_plaintext_by_default_adds_nothing() -> None:
    s = settings()
    assert ks.kafka_python_options(s) == {} and ks.aiokafka_options(s) == {}
    assert ks.faust_credentials(s) is None


def test_sasl_ssl_maps_to_every_client(pem: dict[str, str]) -> None:
    s = settings(kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-512",
                 kafka_sasl_username="slaledger", kafka_sasl_password="s3cret",
                 kafka_ssl_cafile=pem["kafka_ssl_cafile"])
    assert ks.kafka_python_options(s) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "slaledger",
        "sasl_plain_password": "s3cret", "ssl_check_hostname": True, "ssl_cafile": pem["kafka_ssl_cafile"]}
    aio = ks.aiokafka_options(s)
    context = aio.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert aio == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                   "sasl_plain_username": "slaledger", "sasl_plain_password": "s3cret"}
    credentials = ks.faust_credentials(s)
    assert isinstance(credentials, faust.SASLCredentials)
    # what Faust's aiokafka driver will hand to its consumer and producer
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("slaledger", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_tls() -> None:
    s = settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                 kafka_sasl_username="u", kafka_sasl_password="p")
    assert "ssl_context" not in ks.aiokafka_options(s)
    assert not any(k.startswith("ssl") for k in ks.kafka_python_options(s))
    auth = credentials_to_aiokafka_auth(ks.faust_credentials(s))
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None


def test_mutual_tls_loads_the_client_certificate(pem: dict[str, str]) -> None:
    s = settings(kafka_security_protocol="SSL", **pem)
    options = ks.kafka_python_options(s)
    assert options["security_protocol"] == "SSL"
    assert (options["ssl_cafile"], options["ssl_certfile"], options["ssl_keyfile"]) == (
        pem["kafka_ssl_cafile"], pem["kafka_ssl_certfile"], pem["kafka_ssl_keyfile"])
    credentials = ks.faust_credentials(s)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


@pytest.mark.parametrize(("env", "message"), [
    ({"kafka_security_protocol": "TLS"}, "SLALEDGER_KAFKA_SECURITY_PROTOCOL"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
     "SLALEDGER_KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "SLALEDGER_KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"}, "SLALEDGER_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "u"}, "use SASL_SSL or SASL_PLAINTEXT"),
    ({"kafka_ssl_cafile": "/ca.pem"}, "use SSL or SASL_SSL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"}, "SLALEDGER_KAFKA_SSL_CERTFILE"),
])
def test_incomplete_configurations_are_refused_with_the_variable_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ks.kafka_python_options(settings(**env))


def test_passwords_are_masked_in_the_logged_settings() -> None:
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                 kafka_sasl_password="hunter2", kafka_ssl_password="keypass")
    public = s.public()
    assert public["kafka_sasl_password"] == "***" and public["kafka_ssl_password"] == "***"
    assert public["kafka_sasl_username"] == "u"
    assert "hunter2" not in repr(public) and "keypass" not in repr(public)


def test_configure_feeds_the_kafka_python_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import kafka_tools

    seen: list[dict[str, object]] = []

    def spy(*topics: str, **configs: object) -> None:
        seen.append(configs)
        raise RuntimeError("stop before connecting")

    monkeypatch.setattr(kafka_tools, "KafkaConsumer", spy)
    monkeypatch.setattr(kafka_tools, "KafkaProducer", spy)
    try:
        ks.configure(settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                              kafka_sasl_username="u", kafka_sasl_password="p"))
        for call in (lambda: kafka_tools.end_offsets_total("127.0.0.1:1", "t"),
                     lambda: list(kafka_tools.read_topic("127.0.0.1:1", "t")),
                     lambda: kafka_tools.producer("127.0.0.1:1", embedded=False)):
            with pytest.raises(RuntimeError, match="stop before connecting"):
                call()
    finally:
        ks.configure(settings())
    assert len(seen) == 3
    assert all(c["security_protocol"] == "SASL_PLAINTEXT" and c["sasl_plain_password"] == "p" for c in seen)
    assert ks.client_options() == {}


def test_the_cli_refuses_a_bad_protocol_with_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "slaledger.cli", "topics", "create"], capture_output=True,
                            text=True, env={"SLALEDGER_KAFKA_SECURITY_PROTOCOL": "TLS", "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "SLALEDGER_KAFKA_SECURITY_PROTOCOL" in result.stderr


def test_kafka_certs_writes_a_ca_and_the_brokers_key_for_each_host(tmp_path: Path) -> None:
    """What `slaledger kafka certs` writes is what a client's TLS check accepts, for each
    host given, and the key is readable by its owner only."""
    from cryptography import x509

    from slaledger.cli import main

    out = tmp_path / "kafka"
    assert main(["kafka", "certs", "--out", str(out), "--host", "kafka-1", "--host", "10.0.0.5"]) == 0
    broker = x509.load_pem_x509_certificate((out / "broker.pem").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kafka-1"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    broker.verify_directly_issued_by(x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()))
    assert (out / "broker.pem").stat().st_mode & 0o077 == 0
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(out / "broker.pem")  # the key and its certificate, in one PEM file
    assert main(["kafka", "certs", "--out", str(out), "--days", "0"]) == 2


def test_a_refused_principal_is_one_line_naming_the_acls() -> None:
    from kafka.errors import TopicAuthorizationFailedError

    from slaledger.failures import describe

    described = describe(TopicAuthorizationFailedError("slaledger.ticket-events"), None)
    assert described is not None
    line, code = described
    assert "refused this principal" in line and "slaledger topics create --acls" in line and code == 1
