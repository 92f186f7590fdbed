"""Who asks: a token's principal and what each role may do.

A plain value, so that every layer that checks a caller (the API, the pages, ``/metrics``)
reads it without reaching the SQL token store that produces it (``projections.tokens``).

Roles: ``agent`` (acts on every ticket), ``referent`` (a member's named referent: files,
reads and answers only that member's tickets), ``auditor`` (reads and audits, sends no
command), ``admin``, and ``metrics`` (Prometheus' token: reads /metrics and nothing else,
no ticket, no session). What each role may do is said here, once, and asked of a
``Principal``: the API, the pages, the metrics server and the token store ask it; none
lists roles of its own (the iTop connector has no principal: its facts are dated under the
policy's connector limit, ``PolicyVersion.backdate_limit``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sla.events import MAX_ACTOR
from sla.ticket import CommandType

ROLES = ("agent", "referent", "auditor", "admin", "metrics")
STAFF = frozenset({"agent", "auditor", "admin"})
SCRAPERS = STAFF | {"metrics"}  # who may read /metrics
SIGN_IN = STAFF | {"referent"}  # who may open a web session
COMMAND_ROLES = frozenset({"agent", "referent", "admin"})  # who sends commands at all
# A referent files and answers (the commands of their member's side); the rest is the support team's.
REFERENT_COMMANDS = frozenset({CommandType.FILE, CommandType.CUSTOMER_RESPONSE})
# Who may put a business time on a fact (within the policy's max_backdate): the support team
# and administrators. A member's own account could otherwise manufacture breaches (a filing
# dated a week back is born breached): their facts carry the moment the GIP received them.
DATING_ROLES = frozenset({"agent", "admin"})


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

    @property
    def referent(self) -> bool:
        """A member's referent: sees and acts on that member's tickets only."""
        return self.role == "referent"

    @property
    def sends_commands(self) -> bool:
        return self.role in COMMAND_ROLES

    def may_send(self, command: CommandType) -> bool:
        """Whether this principal may send ``command`` at all (the ticket's state decides the rest)."""
        return self.sends_commands and (not self.referent or command in REFERENT_COMMANDS)

    @property
    def dates_facts(self) -> bool:
        """May give a fact a business time earlier than its reception (``DATING_ROLES``)."""
        return self.role in DATING_ROLES

    @property
    def reads_metrics(self) -> bool:
        return self.role in SCRAPERS
