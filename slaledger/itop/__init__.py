"""iTop connector: UserRequest and Incident changes become ticket commands.

Members file on the iTop portal; without this the support team would type every ticket a
second time. ``slaledger itop sync`` polls iTop's REST/JSON API (``core/get``, API version
1.3) for the objects changed since its checkpoint, turns each object's snapshot into the
commands the HTTP API would have sent (file, acknowledge, inform, wait for customer,
customer response, resolve, reopen, close) and publishes them on the commands topic. The
ticket agent, single writer of each ticket, validates them with the state machine as any
other command.

The client reads each changed ticket's status changes from iTop's change log, so every
transition between two polls becomes its command with iTop's own time. After each pass the
write-back (``writeback``) writes the SLA facts of the iTop tickets (deadline set or moved,
warning, breach, retraction) to their private log, once each.

Three parts: the client (``client``: ``ItopClient``), the mapping (``mapping``:
``translate``, pure, one snapshot → commands, simulated through ``sla.ticket.decide`` so
only what the state machine accepts is sent), and the sync (``sync``: ``sync_once``,
``run_once``, ``run_forever``: checkpoint, publish, back-off).
"""

from .client import MAX_PAGE_SIZE, ItopClient, ItopError
from .mapping import Reference, translate
from .sync import (
    CheckpointStore,
    KafkaPublisher,
    SyncResult,
    describe_failure,
    is_retryable,
    parse_duration,
    parse_since,
    run_forever,
    run_once,
    sync_once,
)
from .writeback import check_field_code, writeback_into, writeback_once

__all__ = [
    "MAX_PAGE_SIZE",
    "CheckpointStore",
    "ItopClient",
    "ItopError",
    "KafkaPublisher",
    "Reference",
    "SyncResult",
    "check_field_code",
    "describe_failure",
    "is_retryable",
    "parse_duration",
    "parse_since",
    "run_forever",
    "run_once",
    "sync_once",
    "translate",
    "writeback_into",
    "writeback_once",
]
