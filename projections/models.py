"""SQL read model (SQLAlchemy 2): tickets, SLA clocks, the event archive, checkpoints.

Everything here is a function of the events topic and can be rebuilt from it, except the
archive, which *is* the durable copy of the log (the embedded broker keeps nothing) and
carries a SHA-256 hash chain (``projections.archive_hash``): ``hash = sha256(prev_hash || envelope)``, so an altered,
missing or reordered row breaks every hash after it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    })


class TicketRow(Base):
    __tablename__ = "tickets"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    product: Mapped[str] = mapped_column(String(128))
    member: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    filed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    restoration_eta: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    # The folded state (sla.ticket.ticket_to_dict), so the projector continues the fold.
    state: Mapped[dict] = mapped_column(JSON)


class ClockRow(Base):
    __tablename__ = "sla_clocks"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sla: Mapped[str] = mapped_column(String(64), primary_key=True)
    member: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    contractual: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), index=True)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    warning_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # At the stop: seconds to spare (positive) or overrun (negative); NULL while open.
    remaining_at_close_seconds: Mapped[float | None] = mapped_column(Float)
    policy_version: Mapped[str] = mapped_column(String(64))
    explanation: Mapped[str] = mapped_column(Text)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When the verdict was sealed (``projections.compliance.decided_at``): the month a clock
    # counts in, for the statement, the dashboards and the recording rules. NULL while undecided.
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class ArchiveRow(Base):
    __tablename__ = "event_archive"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    ticket_id: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    topic: Mapped[str] = mapped_column(String(249))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    envelope: Mapped[str] = mapped_column(Text)  # the record value exactly as on the topic
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The row's leaf in the Merkle tree (``projections.tree``): 0, 1, 2… in append order (seq
    # may skip values; a leaf index never does). NULL only in a database not yet migrated.
    leaf_index: Mapped[int | None] = mapped_column(BigInteger, index=True)


class MerkleNodeRow(Base):
    """The hash of every complete subtree of the archive's Merkle tree (RFC 6962): level 0
    holds the leaves (SHA-256(0x00 || envelope)), level l index i covers leaves i·2^l …
    (i+1)·2^l − 1. Enough for any root, inclusion or consistency proof in O(log N) rows."""

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class SignedHeadRow(Base):
    """A signed tree head (``projections.heads``): what the operator's Ed25519 key vouched
    for at ``signed_at``. ``published_at`` is set once it is on the tree-heads topic."""

    __tablename__ = "signed_heads"

    head_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    policy_versions: Mapped[list] = mapped_column(JSON)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))  # base64 (key hash and) Ed25519 signature
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # hex root of the map of every ticket's history at tree_size (``projections.ticket_map``);
    # NULL for heads signed before it existed (migration 0012)
    ticket_map_root: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str | None] = mapped_column(String(255))  # NULL: signed in the former JSON form
    cosignatures: Mapped[list | None] = mapped_column(JSON)  # witnesses' signature lines (C2SP)


class TicketMapTicketRow(Base):
    """A ticket's entry in the map of every ticket's history (``projections.ticket_map``):
    its place in the map (the order of first events in the log), how many events it has
    and the history hash over their leaves, as of the archive's last row (``last_leaf``)."""

    __tablename__ = "ticket_map_tickets"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ordinal: Mapped[int] = mapped_column(BigInteger, unique=True)
    event_count: Mapped[int] = mapped_column(BigInteger)
    history_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    last_leaf: Mapped[int] = mapped_column(BigInteger, index=True)


class TicketMapNodeRow(Base):
    """A complete subtree of the ticket map as of every head from ``since_size`` on (until a
    row of a larger ``since_size`` replaces it): the map as of any signed head stays readable
    for its proofs, and a head writes only the nodes above the tickets that changed."""

    __tablename__ = "ticket_map_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    since_size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class TicketMapCommitRow(Base):
    """The ticket map committed at an archive size (a signed head's): how many tickets it
    holds and its root."""

    __tablename__ = "ticket_map_commits"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tickets: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))


class CheckpointRow(Base):
    __tablename__ = "projection_checkpoints"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)  # last applied offset


class DeadLetterRow(Base):
    """A record the worker could not use, as found on the dead-letter topic."""

    __tablename__ = "dead_letters"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reason_kind: Mapped[str] = mapped_column(String(64), index=True)  # "unreadable event", "command refused", …
    reason: Mapped[str] = mapped_column(Text)
    origin_topic: Mapped[str | None] = mapped_column(String(249))
    origin_partition: Mapped[int | None] = mapped_column(Integer)
    origin_offset: Mapped[int | None] = mapped_column(BigInteger)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    """An API bearer token, stored as its SHA-256 (the secret is shown once, at creation)."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # agent | referent | auditor | admin
    member: Mapped[str | None] = mapped_column(String(128))  # a referent's member
    label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSessionRow(Base):
    """A web view's sign-in session: the cookie holds a random id, stored as its SHA-256. It
    lives while its token is not revoked, it is used within the idle limit, and it is younger
    than the absolute limit (``projections.tokens.TokenStore``); sign-out deletes it."""

    __tablename__ = "web_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("api_tokens.token_id", name="fk_web_sessions_token_id_api_tokens", ondelete="CASCADE"),
        index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JudgmentRow(Base):
    """A clock judged met or excluded, kept for good: ``slaledger_sla_outcomes_total`` counts
    these (and the breaches and retractions of the archive), so a counter never goes down
    when the ticket is reclassified or reopened afterwards."""

    __tablename__ = "sla_judgments"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sla: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)  # met | excluded
    member: Mapped[str] = mapped_column(String(128))
    judged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItopCheckpointRow(Base):
    """Where the iTop connector stopped, per iTop instance and class (``slaledger.itop``).

    ``watermark`` is the highest ``last_update`` read, kept as iTop wrote it (local time,
    "Y-m-d H:i:s") so the next OQL query compares like with like; ``seen`` maps the keys
    read inside the overlap window to their ``last_update``, so re-reading the window
    does not re-send objects that have not changed.
    """

    __tablename__ = "itop_checkpoints"

    source: Mapped[str] = mapped_column(String(255), primary_key=True)  # the REST endpoint URL
    itop_class: Mapped[str] = mapped_column(String(64), primary_key=True)
    watermark: Mapped[str | None] = mapped_column(String(19))
    seen: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatementSentRow(Base):
    """A monthly statement e-mailed to a member's referent (``slaledger report schedule``):
    one row per member and month, so a restarted scheduler does not send it twice."""

    __tablename__ = "monthly_statements_sent"

    member: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(255))
    pdf_sha256: Mapped[str] = mapped_column(String(64))  # the PDF as sent, to tell it from a later edition
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItopTicketRow(Base):
    """Which iTop object a ticket comes from (filled by ``slaledger itop sync``), so the SLA
    write-back knows where to write instead of guessing a key from the ticket id."""

    __tablename__ = "itop_tickets"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(255), index=True)  # the REST endpoint URL
    itop_class: Mapped[str] = mapped_column(String(64))
    itop_key: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItopWritebackRow(Base):
    """An SLA fact written to an iTop ticket's private log, recorded once iTop confirmed it:
    the write-back never writes the same fact twice (the entry's marker guards the window
    between iTop's answer and this row)."""

    __tablename__ = "itop_writebacks"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fact_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricTotalRow(Base):
    """A running total of a metric that grows with history (``projections.totals``): added
    to by the projector with the events it counts, so a scrape reads these rows only."""

    __tablename__ = "metric_totals"

    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    labels: Mapped[str] = mapped_column(String(600), primary_key=True)  # label values joined by \x1f
    value: Mapped[float] = mapped_column(Float)


Index("ix_event_archive_type", ArchiveRow.type)
# A projection_checkpoints row holding the seq of the last archived row, written in the same
# transaction: an archive whose last rows were deleted ends before it (the audit says so).
ARCHIVE_HEAD = "__archive_head__"


# Core tables of the models, for SQLAlchemy Core queries.
TICKETS: Table = TicketRow.__table__  # type: ignore[assignment]
CLOCKS: Table = ClockRow.__table__  # type: ignore[assignment]
ARCHIVE: Table = ArchiveRow.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = CheckpointRow.__table__  # type: ignore[assignment]
DEAD: Table = DeadLetterRow.__table__  # type: ignore[assignment]
JUDGMENTS: Table = JudgmentRow.__table__  # type: ignore[assignment]
STATEMENTS_SENT: Table = StatementSentRow.__table__  # type: ignore[assignment]
NODES: Table = MerkleNodeRow.__table__  # type: ignore[assignment]
HEADS: Table = SignedHeadRow.__table__  # type: ignore[assignment]
MAP_TICKETS: Table = TicketMapTicketRow.__table__  # type: ignore[assignment]
MAP_NODES: Table = TicketMapNodeRow.__table__  # type: ignore[assignment]
MAP_COMMITS: Table = TicketMapCommitRow.__table__  # type: ignore[assignment]


def shadow_tables(suffix: str = "_rebuild") -> tuple[Table, Table]:
    """Copies of the tickets and clocks tables under other names, for ``--rebuild``."""
    shadow = MetaData()
    out = []
    lives: tuple[Table, Table] = (TicketRow.__table__, ClockRow.__table__)  # type: ignore[assignment]
    for live in lives:
        table = live.to_metadata(shadow, name=f"{live.name}{suffix}")
        table.primary_key.name = f"pk_{table.name}"  # constraint names are schema-wide in PostgreSQL
        for index in list(table.indexes):  # created under the live names after the swap
            table.indexes.discard(index)
        out.append(table)
    return out[0], out[1]
TOTALS: Table = MetricTotalRow.__table__  # type: ignore[assignment]
