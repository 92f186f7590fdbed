"""What the HTTP layer needs from the rest of the product: narrow ports.

Read a ticket, send a command and await its outcome, list tickets, authenticate, tell
readiness, and read the archive (a ticket's timeline and its dispute file). The API and the
web pages never see the Faust worker, the SQL engine or the token store as such:
``slaledger.bootstrap`` wires implementations of these into a ``Ports`` value. A test can
hand in fakes; following a request stays inside ``slaledger/web/``.

The types the web layer takes from the rest of the product (the caller, a command's
outcome and why none came) are imported here and nowhere else in ``slaledger/web/``: when
one moves, one import line follows it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from service.outcomes import CommandUnavailable, NoOutcome, Outcome, OwnerChanged
from service.principal import Principal
from sla.catalogue import Catalogue
from sla.events import Event
from sla.policy import Policy
from sla.ticket import Command, Ticket

from .throttle import FailureLimit, Network

__all__ = [
    "Archive",
    "Authenticator",
    "CommandBus",
    "CommandUnavailable",
    "DraftComparisons",
    "NoOutcome",
    "Outcome",
    "OwnerChanged",
    "Ports",
    "Principal",
    "TicketFinder",
    "TicketReader",
    "WorkerStatus",
]


class TicketReader(Protocol):
    def load(self, ticket_id: str) -> Ticket | None:
        """This worker's copy of a ticket (reads are routed to the worker that owns it)."""

    def serves(self, ticket_id: str) -> bool:
        """This worker answers for the ticket now (its partition held and recovered): a ticket
        ``load`` lacks then does not exist; otherwise its reads are answered 503."""


class CommandBus(Protocol):
    @property
    def accepting(self) -> bool:
        """Commands can be sent now (false while the worker starts)."""

    async def submit(self, command: Command) -> Outcome:
        """Send and await the outcome; raises ``CommandUnavailable`` when nothing was sent,
        ``OwnerChanged`` when the worker deciding it lost the partition (it may be applied) and
        ``NoOutcome`` when no outcome came in time."""


class TicketFinder(Protocol):
    async def find(self, statuses: Collection[str], member: str | None) -> list[Ticket]:
        """Every ticket with one of ``statuses`` (all when empty) of ``member`` (all when None)."""


class Authenticator(Protocol):
    """Tokens and the web sessions opened with them (every method may block: SQL)."""

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of a bearer token (None: unknown or revoked)."""

    def open_session(self, secret: str) -> tuple[str, Principal] | None:
        """Sign in with a token: a new session id and its principal (None: bad token)."""

    def session(self, session_id: str) -> Principal | None:
        """The principal of a live session (None: unknown, signed out, expired, token revoked)."""

    def close_session(self, session_id: str) -> None:
        """Sign out."""


class Archive(Protocol):
    def events(self, ticket_id: str) -> list[Event]:
        """The ticket's events as archived, in archive order (may block: SQL)."""

    def dispute_file(self, ticket_id: str, fmt: str) -> tuple[bytes, bool] | None:
        """The ticket's dispute file in ``fmt`` (json, md, html, pdf) replayed from the archive
        with its chain verified, and whether its integrity holds; None: no such ticket."""


class WorkerStatus(Protocol):
    def status(self) -> dict[str, Any]:
        """Readiness as ``/readyz`` shows it; ``"ready"`` is the verdict."""


class DraftComparisons(Protocol):
    def drafts(self) -> list[str]:
        """The draft policy files offered (names in the configured directory), sorted."""

    def compare(self, draft: str, member: str | None, filed_from: datetime, filed_to: datetime) -> dict[str, Any]:
        """The what-if document (``projections.whatif``) of a period under ``draft`` (one of
        ``drafts()``); raises ``sla.policy.PolicyError`` on a draft that cannot be read. Blocks (SQL)."""


@dataclass(frozen=True)
class Ports:
    tickets: TicketReader
    commands: CommandBus
    finder: TicketFinder
    worker: WorkerStatus
    policy: Policy
    # The members directory (``slaledger.members.directory``): a filing names one of them.
    # None: no directory configured (a worker of the tests), any member is taken.
    members: Catalogue | None = None
    auth: Authenticator | None = None  # None: authentication off (a worker nobody can reach)
    archive: Archive | None = None  # None: no SQL archive configured (no timeline, no dispute file)
    whatif: DraftComparisons | None = None  # None: no drafts directory or no archive (no what-if page)
    secure_cookie: bool = False  # the public URL is https: the session cookie is Secure
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For names the client
    failures: FailureLimit = field(default_factory=FailureLimit)  # refused tokens per client address
