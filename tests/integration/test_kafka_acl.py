"""Apache Kafka refuses whoever the deployment does not name: no credentials, a wrong
password, or a principal asking for more than ``streams.kafka_acls`` grants it. The events
topic is the evidence: only the worker's principal may write it.

A real secured broker (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer), the one every Kafka
test runs on. kafka-python reports a refused connection as a bootstrap timeout, so each
refusal is also read where the broker states its reason: its log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from slaledger.brokers.kafka_cluster import KafkaCluster
from streams.kafka_acls import AUDITOR, GRANTS, ITOP, PROJECTOR, WORKER, Grant, apply_acls
from streams.kafka_security import kafka_python_options
from streams.topics import COMMANDS, DEAD_LETTERS, EVENTS, TREE_HEADS
from tests.integration.conftest import running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with running_broker("kafka", tmp_path_factory.mktemp("acl")) as broker:
        assert isinstance(broker, KafkaCluster)
        yield broker


def options(cluster: KafkaCluster, principal: str) -> dict[str, Any]:
    return kafka_python_options(cluster.security(principal))


def produce(cluster: KafkaCluster, principal: str, topic: str, *, idempotent: bool = True) -> None:
    """One record, sent as the product's producers send (idempotent) or, for a principal
    that writes no topic at all (which the broker refuses an idempotent producer id before any
    topic is named), plainly."""
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=idempotent,
                             max_block_ms=10_000, **options(cluster, principal))
    try:
        producer.send(topic, key=b"T-1", value=b"{}").get(timeout=10)
    finally:
        producer.close()


def read(cluster: KafkaCluster, principal: str, topic: str) -> None:
    """Fetch ``topic`` from its start, as the projector and the worker's readers do (by
    assignment, no group)."""
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                             **options(cluster, principal))
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:  # kafka-python hides a refused topic's metadata as an absent topic
            raise TopicAuthorizationFailedError(topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        consumer.poll(timeout_ms=1000)
    finally:
        consumer.close()


def refused(cluster: KafkaCluster, **client: Any) -> str:
    """Connect with ``client``'s options; the broker's log lines written meanwhile, once the
    client has given up."""
    log = cluster.node(1).log_path
    start = log.stat().st_size
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(bootstrap_servers=cluster.bootstrap, bootstrap_timeout_ms=3000, **client).close()
    with open(log, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def test_a_client_without_credentials_cannot_connect(cluster: KafkaCluster) -> None:
    assert "Failed authentication" in refused(cluster)  # plaintext: the TLS handshake fails
    tls_only = refused(cluster, security_protocol="SSL", ssl_cafile=str(cluster.ca_file))
    assert "Failed authentication" in tls_only or "Unexpected Kafka request" in tls_only


def test_a_wrong_password_is_refused(cluster: KafkaCluster) -> None:
    wrong = dataclasses.replace(cluster.security(WORKER), kafka_sasl_password="not-the-password")
    broker_says = refused(cluster, **kafka_python_options(wrong))
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in broker_says


@pytest.mark.parametrize("principal", [ITOP, PROJECTOR, AUDITOR])
def test_only_the_worker_may_write_the_events_topic(cluster: KafkaCluster, principal: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        produce(cluster, principal, EVENTS, idempotent=principal != AUDITOR)


def test_each_principal_does_its_own_work(cluster: KafkaCluster) -> None:
    produce(cluster, WORKER, EVENTS)
    produce(cluster, ITOP, COMMANDS)
    produce(cluster, PROJECTOR, TREE_HEADS)
    read(cluster, PROJECTOR, EVENTS)
    read(cluster, PROJECTOR, DEAD_LETTERS)
    read(cluster, AUDITOR, EVENTS)
    read(cluster, WORKER, COMMANDS)


@pytest.mark.parametrize(("principal", "topic"), [(ITOP, COMMANDS), (AUDITOR, DEAD_LETTERS), (PROJECTOR, COMMANDS)])
def test_a_principal_reads_nothing_it_was_not_granted(cluster: KafkaCluster, principal: str, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        read(cluster, principal, topic)


def test_the_brokers_hold_exactly_the_declared_acls(cluster: KafkaCluster) -> None:
    """A grant added by hand (the connector writing events) is revoked by the next apply."""
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, **options(cluster, "admin"))
    try:
        admin.create_acls([ACL(f"User:{ITOP}", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                               ResourcePattern(ResourceType.TOPIC, EVENTS, ACLResourcePatternType.LITERAL))])
        produce(cluster, ITOP, EVENTS)  # the hand-made grant works…
        assert apply_acls(cluster.bootstrap) == (0, 1)
        with pytest.raises(TopicAuthorizationFailedError):  # …until the declared table is applied again
            produce(cluster, ITOP, EVENTS)
        acls, _ = admin.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                                                ResourcePatternFilter(ResourceType.ANY, None,
                                                                      ACLResourcePatternType.ANY)))
    finally:
        admin.close()
    held = {(a.principal, Grant(a.resource_pattern.resource_type.name, a.resource_pattern.resource_name,
                                a.operation.name, a.resource_pattern.pattern_type.name)) for a in acls}
    assert held == {(f"User:{p}", g) for p, grants in GRANTS.items() for g in grants}
    assert {p for p, g in held if g == Grant("TOPIC", EVENTS, "WRITE")} == {f"User:{WORKER}"}


def test_the_passwords_are_files_never_values(cluster: KafkaCluster) -> None:
    env = cluster.client_env(WORKER)
    assert "SLALEDGER_KAFKA_SASL_PASSWORD" not in env
    assert Path(env["SLALEDGER_KAFKA_SASL_PASSWORD_FILE"]).stat().st_mode & 0o077 == 0
