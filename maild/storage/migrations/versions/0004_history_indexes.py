"""indexes that keep month reports and the nearest deadline off the whole history

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 23:00:00

``report sla --month`` selects tickets by ``created_at``, ``report hours
--month`` the ledger by ``booked_at``; without these indexes each read every
row ever stored. ``ix_tickets_awaiting_reaction`` holds only open tickets still
waiting for their first response, in deadline order, so ``status`` and the
metrics find the nearest deadlines in a few index entries.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

AWAITING = "status IN ('new', 'open', 'waiting') AND first_response_at IS NULL AND reaction_due IS NOT NULL"


def upgrade() -> None:
    op.create_index('ix_tickets_created_at', 'tickets', ['created_at'], unique=False)
    op.create_index('ix_ledger_booked_at', 'ledger', ['booked_at'], unique=False)
    op.create_index('ix_tickets_awaiting_reaction', 'tickets', ['reaction_due'], unique=False,
                    sqlite_where=sa.text(AWAITING), postgresql_where=sa.text(AWAITING))


def downgrade() -> None:
    op.drop_index('ix_tickets_awaiting_reaction', table_name='tickets')
    op.drop_index('ix_ledger_booked_at', table_name='ledger')
    op.drop_index('ix_tickets_created_at', table_name='tickets')
