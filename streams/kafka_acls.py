"""Who may do what on Apache Kafka: one SASL principal per kind of process, least privilege.

The brokers run the KRaft ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``:
a principal can do only what is granted here (Read and Write imply Describe). The events
topic is the evidence, so **only the worker may write it**; the projector, which signs the
archive, writes its heads to their own topic. ``admin`` is the brokers' super user (their own
traffic, topic and ACL creation): its password is held by the brokers and the one-shot
``slaledger topics create --acls`` job only. The monthly report job reads PostgreSQL only,
so it has no principal; the embedded Tansu broker (dev mode) has no authentication at all.

``apply_acls`` makes the brokers' ACLs of these principals exactly the table below: what
is missing is created, what is no longer listed is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from .fence import TRANSACTIONAL_PREFIX
from .topics import APP_ID, COMMANDS, DEAD_LETTERS, EVENTS, OUTCOMES, POSITION_TABLE, TICKET_TABLE, TREE_HEADS

log = structlog.get_logger(__name__)
PROPAGATION = 30.0  # seconds the brokers may take to show ACLs just set

ADMIN = "admin"
WORKER, PROJECTOR, ITOP, AUDITOR = "worker", "projector", "itop", "auditor"


@dataclass(frozen=True, order=True)
class Grant:
    """ALLOW ``operation`` on the resource named ``name`` (``pattern``: the name itself, or
    every name it starts) from any host."""

    resource: str  # TOPIC | GROUP | TRANSACTIONAL_ID
    name: str
    operation: str  # READ | WRITE | DESCRIBE (a transactional id's coordinator is found with it)
    pattern: str = "LITERAL"  # LITERAL | PREFIXED


def _topic(name: str, *operations: str) -> list[Grant]:
    return [Grant("TOPIC", name, op) for op in operations]


GRANTS: dict[str, list[Grant]] = {
    # The HTTP API sends commands; the agent reads them and writes the events, outcomes and dead
    # letters; it reads the events back (recovery, gap repair) and the API awaits outcomes;
    # Faust's changelogs, leader topic and group; the transactional ids of the partitions it
    # owns (``streams.fence``: the fence of a worker that lost them).
    WORKER: [*_topic(COMMANDS, "READ", "WRITE"), *_topic(EVENTS, "READ", "WRITE"), *_topic(OUTCOMES, "READ", "WRITE"),
             *_topic(DEAD_LETTERS, "WRITE"),
             *_topic(f"{APP_ID}-{TICKET_TABLE}-changelog", "READ", "WRITE"),
             *_topic(f"{APP_ID}-{POSITION_TABLE}-changelog", "READ", "WRITE"),
             *_topic(f"{APP_ID}-__assignor-__leader", "READ", "WRITE"),
             Grant("GROUP", APP_ID, "READ"),
             *[Grant("TRANSACTIONAL_ID", TRANSACTIONAL_PREFIX, op, "PREFIXED") for op in ("DESCRIBE", "WRITE")]],
    # Reads by assignment (no group: its positions are in PostgreSQL); publishes the signed heads.
    PROJECTOR: [*_topic(EVENTS, "READ"), *_topic(DEAD_LETTERS, "READ"), *_topic(TREE_HEADS, "WRITE")],
    # The iTop connector sends commands, and sets aside (dead letters) the objects that name an
    # unknown member or product; the worker decides the rest.
    ITOP: [*_topic(COMMANDS, "WRITE"), *_topic(DEAD_LETTERS, "WRITE")],
    # `slaledger audit replay|verify --source kafka`: reads the log, writes nothing.
    AUDITOR: _topic(EVENTS, "READ"),
}
PRINCIPALS = (ADMIN, *GRANTS)


def _acl(principal: str, grant: Grant) -> Any:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    return ACL(f"User:{principal}", "*", ACLOperation[grant.operation], ACLPermissionType.ALLOW,
               ResourcePattern(ResourceType[grant.resource], grant.name, ACLResourcePatternType[grant.pattern]))


def _grant_of(acl: Any) -> tuple[str, Grant]:
    pattern = acl.resource_pattern
    return (acl.principal.removeprefix("User:"),
            Grant(pattern.resource_type.name, pattern.resource_name, acl.operation.name, pattern.pattern_type.name))


def apply_acls(bootstrap: str, client_options: dict[str, object] | None = None) -> tuple[int, int]:
    """Make the ACLs of ``GRANTS``' principals exactly ``GRANTS``; returns (created, deleted).
    Run as the super user (the brokers refuse anyone else)."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePatternFilter,
        ResourceType,
    )

    from .kafka_security import client_options as security_options

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="slaledger-admin",
                             **{**security_options(), **(client_options or {})})

    def present() -> dict[tuple[str, Grant], Any]:
        found: dict[tuple[str, Grant], Any] = {}
        for principal in GRANTS:
            acls, error = admin.describe_acls(ACLFilter(
                f"User:{principal}", None, ACLOperation.ANY, ACLPermissionType.ANY,
                ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
            if error.errno:
                raise RuntimeError(f"describing {principal}'s ACLs: {error}")
            found.update({_grant_of(acl): acl for acl in acls})
        return found

    try:
        wanted = {(p, g) for p, grants in GRANTS.items() for g in grants}
        before = present()
        missing = sorted(wanted - before.keys())
        extra = [acl for key, acl in before.items() if key not in wanted]
        if missing:
            result = admin.create_acls([_acl(p, g) for p, g in missing])
            if result["failed"]:
                raise RuntimeError(f"creating ACLs: {result['failed']}")
        if extra:
            filters = [ACLFilter(a.principal, a.host, a.operation, a.permission_type, a.resource_pattern)
                       for a in extra]
            for _filter, _matches, error in admin.delete_acls(filters):
                if error.errno:
                    raise RuntimeError(f"deleting ACLs: {error}")
        for principal, grant in missing:
            log.info("kafka acl created", principal=principal, resource=grant.resource, name=grant.name,
                     operation=grant.operation)
        for principal, grant in (_grant_of(a) for a in extra):
            log.info("kafka acl deleted", principal=principal, resource=grant.resource, name=grant.name,
                     operation=grant.operation)
        # A broker applies ACLs from the metadata log after the controller committed them:
        # a client right after this call was refused (a bench's producer: InitProducerId,
        # ClusterAuthorizationFailed). Wait until the brokers answer with exactly the grants.
        deadline = time.monotonic() + PROPAGATION
        while (missing or extra) and present().keys() != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the brokers do not show the ACLs {PROPAGATION:.0f} s after they were set")
            time.sleep(0.1)
        return len(missing), len(extra)
    finally:
        admin.close()
