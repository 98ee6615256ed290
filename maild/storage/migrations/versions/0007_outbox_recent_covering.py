"""the per-domain acknowledgement count reads the last hour from one covering index

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:50:00

Each batch counts the automatic mail of the last hour per domain (the
per-domain limit). Through ix_outbox_created_at it found the hour's rows in the
index and read each one's ``automatic`` and ``rate_key`` from the table, whose
rows are wide (the rendering context, recipients): during a backlog the hour
holds every acknowledgement and notification queued so far, up to 15,000 at
10,000 mails. (created_at, automatic, rate_key) answers it from the index alone
(SQLite: 39.7 -> 17.6 ms CPU a call at 15,000 rows; PostgreSQL: an index-only
scan once vacuum has marked the pages visible). It replaces the created_at
index, which nothing else used.
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_recent_automatic', 'outbox', ['created_at', 'automatic', 'rate_key'], unique=False)
    op.drop_index('ix_outbox_created_at', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_created_at', 'outbox', ['created_at'], unique=False)
    op.drop_index('ix_outbox_recent_automatic', table_name='outbox')
