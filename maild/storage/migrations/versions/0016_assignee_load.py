"""the open load of each present consultant is read from ``ix_tickets_assignee`` alone

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 02:00:00

The assignment weighs each present consultant's open tickets by kind and
verification (``Team.open_load``), once per batch. ``ix_tickets_assignee``
(assigned_to, status) found the open tickets, and each of them was then read
from the table for its ``contract_kind`` and ``verified``: 15 ms a batch with
9,000 open tickets assigned (bench/README, fourteenth session), a table page
per ticket. With the two columns at the end of the index the count is read from
the index alone; every query that used the index keeps using it.
"""
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_tickets_assignee', table_name='tickets')
    op.create_index('ix_tickets_assignee', 'tickets', ['assigned_to', 'status', 'contract_kind', 'verified'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_tickets_assignee', table_name='tickets')
    op.create_index('ix_tickets_assignee', 'tickets', ['assigned_to', 'status'], unique=False)
