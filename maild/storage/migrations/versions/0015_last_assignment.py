"""each consultant's last assignment is one index seek, not a scan of their every ticket

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 00:50:00

The assignment breaks a tie by who has waited longest since their last
assignment: ``max(assigned_at)`` per present consultant, asked once per batch
and day. Through ``ix_tickets_assignee`` (assigned_to, status) that read every
ticket a consultant was ever given: 0.34 s a batch at a million mails of
history, where the assignees' tickets are 790,000 (bench/README, thirteenth
session). ``ix_tickets_assigned_last`` (assigned_to, assigned_at) ends at each
consultant's last assignment.
"""
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tickets_assigned_last', 'tickets', ['assigned_to', 'assigned_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tickets_assigned_last', table_name='tickets')
