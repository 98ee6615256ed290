"""the acknowledgement limits' index holds only the mail they count: rows with a rate key

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 03:10:00

``ix_outbox_recent_automatic`` (created_at, automatic, rate_key) serves the
per-sender and per-domain acknowledgement limits, which count only mail with a
rate key. Notifications, escalations and digests have none (56 % of the rows of
a working day's backlog) and were in it all the same, so on PostgreSQL each of
their sent marks wrote an entry into it (a mark's new row version goes into every
index whose condition it meets): -3.7 % of a mark's server instructions, -6.6 %
of a notification's (bench/README "PostgreSQL's CPU per mail, fourteenth
session"). The count writes the condition out (``store._recent_automatic_keys``).
"""
import sqlalchemy as sa
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

RATE_KEYED = "rate_key IS NOT NULL"


def upgrade() -> None:
    op.drop_index('ix_outbox_recent_automatic', table_name='outbox')
    op.create_index('ix_outbox_recent_automatic', 'outbox', ['created_at', 'automatic', 'rate_key'], unique=False,
                    sqlite_where=sa.text(RATE_KEYED), postgresql_where=sa.text(RATE_KEYED))


def downgrade() -> None:
    op.drop_index('ix_outbox_recent_automatic', table_name='outbox')
    op.create_index('ix_outbox_recent_automatic', 'outbox', ['created_at', 'automatic', 'rate_key'], unique=False)
