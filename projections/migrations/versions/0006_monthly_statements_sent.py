"""Monthly statements e-mailed to members (issue #16): what was sent, so a restarted
scheduler does not send a month twice.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monthly_statements_sent",
        sa.Column("member", sa.String(128), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member", "month", name="pk_monthly_statements_sent"),
    )


def downgrade() -> None:
    op.drop_table("monthly_statements_sent")
