"""Running totals of the metrics that grow with history (issue #20): filled from the whole
history once, here; the projector adds to them afterwards.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from projections import totals

    op.create_table(
        "metric_totals",
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("labels", sa.String(600), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("metric", "labels", name="pk_metric_totals"),
    )
    conn = op.get_bind()
    totals.fill(conn, totals.recount(conn))


def downgrade() -> None:
    op.drop_table("metric_totals")
