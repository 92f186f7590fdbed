"""Who asks: a token's principal and what each role may do.

A plain value, so that every layer that checks a caller (the API, the pages, ``/metrics``)
reads it without reaching the SQL token store that produces it (``projections.tokens``).

Roles: ``agent`` (acts on every ticket), ``referent`` (a member's named referent: files,
reads and answers only that member's tickets), ``auditor`` (reads and audits, sends no
command), ``admin``, and ``metrics`` (Prometheus' token: reads /metrics and nothing else,
no ticket, no session).
"""

from __future__ import annotations

from dataclasses import dataclass

from sla.events import MAX_ACTOR

ROLES = ("agent", "referent", "auditor", "admin", "metrics")
STAFF = frozenset({"agent", "auditor", "admin"})
SCRAPERS = STAFF | {"metrics"}  # who may read /metrics
SIGN_IN = STAFF | {"referent"}  # who may open a web session


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str
    member: str | None
    label: str

    @property
    def actor(self) -> str:
        """What every event this principal causes records as its actor (cut to what an
        event accepts: a label stored before labels were checked may be longer)."""
        return f"{self.role}:{self.label}"[:MAX_ACTOR]

    @property
    def staff(self) -> bool:
        return self.role in STAFF
