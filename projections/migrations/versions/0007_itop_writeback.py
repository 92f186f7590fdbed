"""iTop write-back: where each iTop ticket comes from, and the SLA facts already written to it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "itop_tickets",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("itop_class", sa.String(64), nullable=False),
        sa.Column("itop_key", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_itop_tickets"),
    )
    op.create_index("ix_itop_tickets_source", "itop_tickets", ["source"])
    op.create_table(
        "itop_writebacks",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("fact_key", sa.String(200), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "fact_key", name="pk_itop_writebacks"),
    )


def downgrade() -> None:
    op.drop_table("itop_writebacks")
    op.drop_index("ix_itop_tickets_source", table_name="itop_tickets")
    op.drop_table("itop_tickets")
