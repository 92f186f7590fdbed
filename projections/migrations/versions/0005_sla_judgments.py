"""Clocks judged met or excluded, kept for good (append-only): the outcome counter counts
these, so it never goes down when a ticket is later reclassified or reopened.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_judgments",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("sla", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("member", sa.String(128), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "sla", "outcome", name="pk_sla_judgments"),
    )
    # What the clocks say today is where the count starts.
    op.execute("INSERT INTO sla_judgments (ticket_id, sla, outcome, member, judged_at) "
               "SELECT ticket_id, sla, status, member, evaluated_at FROM sla_clocks "
               "WHERE status IN ('met', 'excluded')")


def downgrade() -> None:
    op.drop_table("sla_judgments")
