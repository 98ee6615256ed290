"""indexes that keep ingest's per-batch reads off the history

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:40:00

At a million mails a 2,000-mail backlog cost the daemon 4x the CPU of an
empty database: the per-domain acknowledgement limit scanned every
acknowledgement ever sent to a domain (the rate index ranges over the key,
not the time), the team's 30-day handling rate read every event, and a
package's draws this month every ledger row of the package. Each now reads
what its window holds.
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_created_at', 'outbox', ['created_at'], unique=False)
    op.create_index('ix_events_kind_at', 'events', ['kind', 'at'], unique=False)
    op.create_index('ix_ledger_contract_booked', 'ledger', ['contract_id', 'booked_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ledger_contract_booked', table_name='ledger')
    op.drop_index('ix_events_kind_at', table_name='events')
    op.drop_index('ix_outbox_created_at', table_name='outbox')
