"""The map of every ticket's history (#26 item 1): ``ticket_map_tickets``, ``ticket_map_nodes``,
``ticket_map_commits`` and ``signed_heads.ticket_map_root``.

Events archived before are covered like later ones: each ticket's count and history hash are
computed here from the archive's leaves in log order (no event, no leaf changes), and the map
is committed at the archive's size, so the next signed head signs it.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from projections import merkle, ticket_map

    op.add_column("signed_heads", sa.Column("ticket_map_root", sa.String(64), nullable=True))
    op.create_table(
        "ticket_map_tickets",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.BigInteger(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("history_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("last_leaf", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_map_tickets"),
        sa.UniqueConstraint("ordinal", name="uq_ticket_map_tickets_ordinal"),
    )
    op.create_index("ix_ticket_map_tickets_last_leaf", "ticket_map_tickets", ["last_leaf"])
    op.create_table(
        "ticket_map_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("since_size", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", "since_size", name="pk_ticket_map_nodes"),
    )
    op.create_table(
        "ticket_map_commits",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("tickets", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_ticket_map_commits"),
    )
    bind = op.get_bind()
    archive = sa.table("event_archive", sa.column("ticket_id", sa.String()), sa.column("envelope", sa.Text()),
                       sa.column("leaf_index", sa.BigInteger()))
    size, last = 0, -1
    while True:
        rows = bind.execute(sa.select(archive.c.ticket_id, archive.c.leaf_index, archive.c.envelope)
                            .where(archive.c.leaf_index > last).order_by(archive.c.leaf_index).limit(5000)).all()
        if not rows:
            break
        ticket_map.record(bind, [(r.ticket_id, int(r.leaf_index), merkle.leaf_hash(r.envelope.encode()))
                                 for r in rows])
        size, last = int(rows[-1].leaf_index) + 1, int(rows[-1].leaf_index)
    ticket_map.commit(bind, size)


def downgrade() -> None:
    op.drop_table("ticket_map_commits")
    op.drop_table("ticket_map_nodes")
    op.drop_index("ix_ticket_map_tickets_last_leaf", "ticket_map_tickets")
    op.drop_table("ticket_map_tickets")
    with op.batch_alter_table("signed_heads") as batch:
        batch.drop_column("ticket_map_root")
