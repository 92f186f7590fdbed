"""The archive's Merkle tree and signed tree heads (#16): ``merkle_nodes``, ``signed_heads``
and ``event_archive.leaf_index``; an existing archive gets its tree built here, in seq order.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from projections import merkle

    op.add_column("event_archive", sa.Column("leaf_index", sa.BigInteger(), nullable=True))
    op.create_index("ix_event_archive_leaf_index", "event_archive", ["leaf_index"])
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_merkle_nodes"),
    )
    op.create_table(
        "signed_heads",
        sa.Column("head_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_versions", sa.JSON(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("head_id", name="pk_signed_heads"),
    )
    op.create_index("ix_signed_heads_signed_at", "signed_heads", ["signed_at"])
    # Build the tree of the rows already archived, in their order.
    bind = op.get_bind()
    archive = sa.table("event_archive", sa.column("seq", sa.BigInteger()), sa.column("envelope", sa.Text()),
                       sa.column("leaf_index", sa.BigInteger()))
    nodes = sa.table("merkle_nodes", sa.column("level", sa.SmallInteger()), sa.column("idx", sa.BigInteger()),
                     sa.column("hash", sa.LargeBinary()))
    size, last = 0, None
    frontier: list[bytes] = []
    while True:
        query = sa.select(archive.c.seq, archive.c.envelope).order_by(archive.c.seq).limit(5000)
        if last is not None:
            query = query.where(archive.c.seq > last)
        rows = bind.execute(query).all()
        if not rows:
            break
        created, stack = merkle.append(size, frontier, [merkle.leaf_hash(r.envelope.encode()) for r in rows])
        bind.execute(sa.insert(nodes), [{"level": lv, "idx": i, "hash": h} for lv, i, h in created])
        bind.execute(sa.update(archive).where(archive.c.seq == sa.bindparam("s")).values(leaf_index=sa.bindparam("l")),
                     [{"s": r.seq, "l": size + n} for n, r in enumerate(rows)])
        size, frontier, last = size + len(rows), [h for _, _, h in stack], rows[-1].seq


def downgrade() -> None:
    op.drop_index("ix_signed_heads_signed_at", "signed_heads")
    op.drop_table("signed_heads")
    op.drop_table("merkle_nodes")
    op.drop_index("ix_event_archive_leaf_index", "event_archive")
    with op.batch_alter_table("event_archive") as batch:
        batch.drop_column("leaf_index")
