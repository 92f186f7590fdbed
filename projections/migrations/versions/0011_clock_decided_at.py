"""When each clock's verdict was sealed (``sla_clocks.decided_at``): the month it counts in
for the compliance of the statement, the dashboards and the recording rules (issue #28).

Filled here from what the rows hold: met and retracted at the stop, excluded at the filing,
breached at the stored deadline — exact but for a periodic clock (incident updates) whose
first missed deadline is not its current one; ``slaledger project --rebuild`` recomputes
every row with the fold.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sla_clocks", sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_sla_clocks_decided_at", "sla_clocks", ["decided_at"])
    op.execute("UPDATE sla_clocks SET decided_at = CASE "
               "WHEN status IN ('met', 'retracted') THEN stopped_at "
               "WHEN status = 'breached' THEN deadline "
               "WHEN status = 'excluded' THEN (SELECT t.filed_at FROM tickets t "
               "WHERE t.ticket_id = sla_clocks.ticket_id) END")


def downgrade() -> None:
    op.drop_index("ix_sla_clocks_decided_at", table_name="sla_clocks")
    op.drop_column("sla_clocks", "decided_at")
