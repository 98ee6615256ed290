"""a sent mark writes one index fewer: ix_outbox_due goes, the pending rows' own index finds due mail

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 02:40:00

``ix_outbox_due`` (status, next_attempt_at) held every outbox row, sent ones
too, so each sent mark, which changes ``status``, wrote a new entry into it
(PostgreSQL: one of the six index entries of the mark's new row version;
SQLite: two of the mark's four B-tree pages). No statement of the cycle read
it since 0014: the claims walk ``ix_outbox_pending_order``, which holds only the
pending rows, and the daemon's other questions about pending mail (whether
any is due, how many wait, how old the oldest is) are asked through it too
(``tables.OUTBOX_PENDING`` written out, as the partial index's condition).
One sent mark on PostgreSQL: 297,000 -> 282,000 server instructions
(bench/README "PostgreSQL's CPU per mail, fourteenth session").
"""
from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_outbox_due', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_due', 'outbox', ['status', 'next_attempt_at'], unique=False)
