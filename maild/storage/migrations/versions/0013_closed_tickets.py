"""retention's daily run reads the day's closed tickets, not every ticket ever closed

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 13:30:00

Retention's periods run from a ticket's ``closed_at``. Each daily run found its
tickets among every closed ticket (``ix_tickets_status``) and, for raw mail,
against every message that still holds raw mail: ~3 s at 1M mails whether
anything was due or not (bench/README "Retention's daily run, ninth session").
The partial index ``ix_tickets_closed`` (closed tickets, by ``closed_at``; ``status``
leads it, or SQLite, given ``status = 'closed'``, picks ``ix_tickets_status``) lets a
run start where the last one stopped (``erasure.RAW_DONE_THROUGH``). A ticket
enters it when it closes, at the end of the range; ingest's new tickets are
not closed, so ingest writes nothing into it.
"""
import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

CLOSED = "status = 'closed'"


def upgrade() -> None:
    op.create_index('ix_tickets_closed', 'tickets', ['status', 'closed_at'], unique=False,
                    sqlite_where=sa.text(CLOSED), postgresql_where=sa.text(CLOSED))


def downgrade() -> None:
    op.drop_index('ix_tickets_closed', table_name='tickets')
