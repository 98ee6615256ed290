"""a claim of the outbox reads its 200 oldest pending rows, not every pending row

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 16:25:00

The outbox is sent oldest first: a drain claims the due rows ``ORDER BY
created_at, id LIMIT 200``. ``ix_outbox_due`` (status, next_attempt_at) finds
the pending rows but not in that order, so PostgreSQL read and sorted every
pending row for each claim: 4-9 ms a claim with a 10,000-mail backlog queued,
0.37-0.74 s of the server's CPU a cycle (bench/README "PostgreSQL's statements,
tenth session"). The partial index ``ix_outbox_pending_order`` holds the
pending rows in the claim's order; a row leaves it when it is marked sent or
failed, and a new row enters at its end.
"""
import sqlalchemy as sa
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"


def upgrade() -> None:
    op.create_index('ix_outbox_pending_order', 'outbox', ['created_at', 'id'], unique=False,
                    sqlite_where=sa.text(PENDING), postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index('ix_outbox_pending_order', table_name='outbox')
