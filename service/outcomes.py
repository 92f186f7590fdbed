"""What a caller is answered: a command's outcome, in the domain's words, or why none came.

The HTTP layer maps these to status codes (``slaledger.web``); the worker sends outcomes on
the outcomes topic in their JSON form (``Outcome.encode``), which every worker of a rolling
deploy must read (``Outcome.decode`` also reads an earlier release's HTTP statuses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CREATED, ACCEPTED = "created", "accepted"  # a filing / any other command, applied
REFUSED = ("conflict", "invalid", "not_found")  # sla.ticket.DomainError.code
RESULTS = frozenset({CREATED, ACCEPTED, *REFUSED})
# Outcomes written by workers of an earlier release (HTTP statuses), read during a rolling deploy.
_LEGACY_STATUS = {201: CREATED, 200: ACCEPTED, 404: "not_found", 409: "conflict", 422: "invalid"}


@dataclass
class Outcome:
    """The answer to a command: ``result`` is one of ``RESULTS``; ``body`` the accepted
    ticket, or the refusal's French message."""

    command_id: str
    result: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps({"command_id": self.command_id, "result": self.result, "body": self.body},
                          ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Outcome:
        """Raises ValueError on anything but an outcome."""
        try:
            raw = json.loads(data or b"")
            if "result" not in raw and "status" in raw:  # written by a worker before 2026-11-29
                raw["result"] = _LEGACY_STATUS.get(int(raw["status"]), "conflict")
            outcome = cls(str(raw["command_id"]), str(raw["result"]), dict(raw["body"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an outcome: {exc}") from None
        if outcome.result not in RESULTS:
            raise ValueError(f"not an outcome: result {outcome.result!r}")
        return outcome


class CommandUnavailable(Exception):
    """The command was not sent: the event log is unavailable (retry later)."""


class OwnerChanged(CommandUnavailable):
    """The command was sent, but the worker that read it was fenced from its ticket's
    partition before its decision was written: the partition's new owner decides it, so it
    may be applied — retry with the same idempotency key, which is answered as decided."""


class NoOutcome(Exception):
    """No outcome within the command timeout: the command may still be applied."""
