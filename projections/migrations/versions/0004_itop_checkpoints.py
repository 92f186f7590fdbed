"""Checkpoints of the iTop connector (watermark and keys seen in the overlap window).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "itop_checkpoints",
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("itop_class", sa.String(64), nullable=False),
        sa.Column("watermark", sa.String(19), nullable=True),
        sa.Column("seen", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "itop_class", name="pk_itop_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("itop_checkpoints")
