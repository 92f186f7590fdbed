"""Kafka TLS and SASL, from settings, for every Kafka client the project creates.

Three client libraries talk to the brokers: Faust (the worker), aiokafka (the worker's
outcome waiter and gap reader) and kafka-python (projector, topic creation, audit,
restore, tools). Each spells the same options differently; this module is the one place
that maps ``SLALEDGER_KAFKA_*`` settings to each spelling, so a TLS or SASL cluster is
configured once, in the environment, and no client is left in plaintext by accident.

kafka-python clients are created deep inside helpers that only receive a bootstrap
string (``streams.kafka_tools``, the projector); rather than thread the options through
every signature, the process records them once at start (``configure``) and those
helpers merge ``client_options()`` into each client. The security of a process's Kafka
connections is a property of the process, like its broker address.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


class KafkaSecurity(Protocol):
    """The ``SLALEDGER_KAFKA_*`` settings (``slaledger.settings.Settings`` has them), passed in
    as a value."""

    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_sasl_username(self) -> str: ...
    @property
    def kafka_sasl_password(self) -> str: ...
    @property
    def kafka_ssl_cafile(self) -> str: ...
    @property
    def kafka_ssl_certfile(self) -> str: ...
    @property
    def kafka_ssl_keyfile(self) -> str: ...
    @property
    def kafka_ssl_password(self) -> str: ...

@dataclass(frozen=True)
class ClientSecurity:
    """``KafkaSecurity`` as a plain value: the Kafka fields of ``slaledger.settings.Settings``
    (which extends it), and a process's own clients that have no ``Settings`` (the test and
    bench processes, ``slaledger.brokers.kafka_cluster.KafkaCluster.security``).
    Protocol PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL; SASL mechanism PLAIN | SCRAM-SHA-256 |
    SCRAM-SHA-512; PEM files for TLS; ``kafka_ssl_password`` unlocks an encrypted client key."""

    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_password: str = ""


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What Faust's SASLCredentials, aiokafka and kafka-python all accept with a username and password.
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_process_options: dict[str, Any] = {}


def protocol_of(settings: KafkaSecurity) -> str:
    return (settings.kafka_security_protocol or "PLAINTEXT").strip().upper()


def validate(settings: KafkaSecurity) -> None:
    """Refuse an incomplete or contradictory configuration at start, with the variable to fix,
    instead of a connection that fails (or silently falls back) later."""
    protocol = protocol_of(settings)
    if protocol not in PROTOCOLS:
        raise ValueError(f"SLALEDGER_KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    sasl = protocol.startswith("SASL_")
    if sasl:
        mechanism = settings.kafka_sasl_mechanism.strip().upper()
        if mechanism not in MECHANISMS:
            raise ValueError(f"SLALEDGER_KAFKA_SASL_MECHANISM: {settings.kafka_sasl_mechanism!r} is not one of "
                             f"{', '.join(MECHANISMS)} (required with {protocol})")
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ValueError(f"{protocol} needs SLALEDGER_KAFKA_SASL_USERNAME and SLALEDGER_KAFKA_SASL_PASSWORD")
    elif settings.kafka_sasl_mechanism or settings.kafka_sasl_username or settings.kafka_sasl_password:
        raise ValueError(f"SASL settings are given but SLALEDGER_KAFKA_SECURITY_PROTOCOL is {protocol} "
                         "(use SASL_SSL or SASL_PLAINTEXT)")
    tls_files = settings.kafka_ssl_cafile or settings.kafka_ssl_certfile or settings.kafka_ssl_keyfile
    if tls_files and not protocol.endswith("SSL"):
        raise ValueError(f"TLS files are given but SLALEDGER_KAFKA_SECURITY_PROTOCOL is {protocol} "
                         "(use SSL or SASL_SSL)")
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise ValueError("SLALEDGER_KAFKA_SSL_KEYFILE needs SLALEDGER_KAFKA_SSL_CERTFILE (the client certificate)")


def ssl_context(settings: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of Faust and aiokafka: the system's trust store, or the given CA,
    hostname checked; with a client certificate when one is configured (mutual TLS)."""
    if not protocol_of(settings).endswith("SSL"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None,
                                settings.kafka_ssl_password or None)
    return context


def _sasl(settings: KafkaSecurity, protocol: str) -> dict[str, Any]:
    """The SASL options, named alike by kafka-python and aiokafka."""
    if not protocol.startswith("SASL_"):
        return {}
    return {"sasl_mechanism": settings.kafka_sasl_mechanism.strip().upper(),
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password}


def _common(settings: KafkaSecurity) -> dict[str, Any]:
    """The options both clients name alike: the protocol and SASL (none for PLAINTEXT)."""
    validate(settings)
    protocol = protocol_of(settings)
    if protocol == "PLAINTEXT":
        return {}
    return {"security_protocol": protocol, **_sasl(settings, protocol)}


def kafka_python_options(settings: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of kafka-python's KafkaConsumer, KafkaProducer and KafkaAdminClient."""
    out = _common(settings)
    if out.get("security_protocol", "").endswith("SSL"):
        out["ssl_check_hostname"] = True
        for option, value in (("ssl_cafile", settings.kafka_ssl_cafile), ("ssl_certfile", settings.kafka_ssl_certfile),
                              ("ssl_keyfile", settings.kafka_ssl_keyfile),
                              ("ssl_password", settings.kafka_ssl_password)):
            if value:
                out[option] = value
    return out


def aiokafka_options(settings: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of aiokafka's AIOKafkaConsumer / AIOKafkaProducer."""
    out = _common(settings)
    context = ssl_context(settings)
    if context is not None:
        out["ssl_context"] = context
    return out


def faust_credentials(settings: KafkaSecurity) -> CredentialsT | None:
    """Faust's ``broker_credentials`` (None: plaintext). Faust derives the protocol from the
    credentials' type: SSLCredentials → SSL; SASLCredentials → SASL_SSL with a TLS context,
    SASL_PLAINTEXT without."""
    import faust

    validate(settings)
    protocol = protocol_of(settings)
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                 mechanism=settings.kafka_sasl_mechanism.strip().upper(), ssl_context=context)


def configure(settings: KafkaSecurity) -> None:
    """Record this process's kafka-python options (see the module docstring)."""
    options = kafka_python_options(settings)
    _process_options.clear()
    _process_options.update(options)


def client_options() -> dict[str, Any]:
    """The kafka-python options recorded by ``configure`` (empty: plaintext)."""
    return dict(_process_options)
