"""drop ix_outbox_rate: the per-sender count reads the last hour through the time index

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 07:10:00

Every acknowledgement inserted its rate key (``domain/mailbox``, random from
one mail to the next) into ix_outbox_rate (rate_key, created_at): 103 MB at a
million mails, where each batch dirtied a leaf page per sender, logged to the
WAL and checkpointed (1,340 of the 13,862 WAL pages a 2,000-mail ingest wrote
at 1M mails, against 86 on an empty database; bench/README "Ingest at 1M,
seventh session"). Its one reader, the per-sender acknowledgement count, now
reads the last hour's automatic mail through ix_outbox_recent_automatic (0007),
in the same read as the per-domain count (``store.recent_automatic``).
tests/storage/test_unused_index.py finds no plan that uses it when put back.

On the 1,166,000-mail benchmark database (SQLite, 5.9 GB) `maild db upgrade` took
5.4 s (1.7 s CPU, load 4.5): SQLite frees the index's pages and rewrites no table.
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_outbox_rate', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_rate', 'outbox', ['rate_key', 'created_at'], unique=False)
