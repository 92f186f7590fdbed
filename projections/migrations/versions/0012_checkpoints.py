"""Signed heads as C2SP checkpoints (issue #26): the log's origin each head was signed for
(NULL for the heads signed before, in the former JSON form, which stay as they are) and the
witnesses' cosignature lines gathered for it.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("signed_heads", sa.Column("origin", sa.String(255), nullable=True))
    op.add_column("signed_heads", sa.Column("cosignatures", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("signed_heads", "cosignatures")
    op.drop_column("signed_heads", "origin")
