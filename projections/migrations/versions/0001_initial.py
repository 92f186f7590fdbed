"""Initial read model: tickets, SLA clocks, event archive, projection checkpoints.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("member", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("filed_at", TZ, nullable=True),
        sa.Column("recorded_at", TZ, nullable=True),
        sa.Column("acknowledged_at", TZ, nullable=True),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("closed_at", TZ, nullable=True),
        sa.Column("restoration_eta", TZ, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_status", "tickets", ["status"])
    op.create_index("ix_tickets_member", "tickets", ["member"])
    op.create_table(
        "sla_clocks",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("sla", sa.String(64), nullable=False),
        sa.Column("member", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("contractual", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deadline", TZ, nullable=True),
        sa.Column("warning_at", TZ, nullable=True),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("stopped_at", TZ, nullable=True),
        sa.Column("remaining_at_close_seconds", sa.Float(), nullable=True),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("evaluated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "sla", name="pk_sla_clocks"),
    )
    op.create_index("ix_sla_clocks_member", "sla_clocks", ["member"])
    op.create_index("ix_sla_clocks_status", "sla_clocks", ["status"])
    op.create_table(
        "event_archive",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_event_archive"),
        sa.UniqueConstraint("event_id", name="uq_event_archive_event_id"),
    )
    op.create_index("ix_event_archive_ticket_id", "event_archive", ["ticket_id"])
    op.create_index("ix_event_archive_type", "event_archive", ["type"])
    op.create_table(
        "projection_checkpoints",
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_projection_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("projection_checkpoints")
    op.drop_table("event_archive")
    op.drop_table("sla_clocks")
    op.drop_table("tickets")
