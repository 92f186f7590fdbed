"""Dead letters as read from the dead-letter topic (for metrics and operators).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("reason_kind", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("origin_topic", sa.String(249), nullable=True),
        sa.Column("origin_partition", sa.Integer(), nullable=True),
        sa.Column("origin_offset", sa.BigInteger(), nullable=True),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_reason_kind", "dead_letters", ["reason_kind"])


def downgrade() -> None:
    op.drop_table("dead_letters")
