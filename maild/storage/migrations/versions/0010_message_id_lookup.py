"""inbound Message-IDs looked up through intake: messages index only maild's own and reused ones

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:45:00

ix_messages_message_id held every mail's Message-ID: an inbound mail's is
random, so each mail dirtied a leaf of a 156 MB B-tree at a million mails
(~2,800 of the 12,000 WAL pages a 2,000-mail ingest wrote, against 132 on an
empty database: bench/README "Ingest at 1M, seventh session"), and intake's
unique dedupe key already holds the same text. Now ``store.tickets_by_message_id``
finds inbound mail through intake (dedupe key -> message row) and the partial
index ix_messages_message_id_lookup holds what intake cannot answer: maild's own
mail (Message-IDs that begin with the ticket number: new ones land next to
each other) and inbound mail kept under ``dup:<sha256>`` because another stored
mail had its Message-ID (``reused_id``, set here for the mail stored before).

`maild db upgrade` from 0009 on a copy of the 1,232,000-mail benchmark database (SQLite, 5.9 GB,
2.4M message rows): 9.4 s (3.4 s CPU, 67 MB, load 4.1): a column added without rewriting the table, the
few `dup:` mails marked, the partial index built from one pass over messages, the full index dropped.
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

LOOKUP = "direction = 'out' OR reused_id"


def upgrade() -> None:
    op.add_column('messages', sa.Column('reused_id', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(sa.text(
        "UPDATE messages SET reused_id = :yes WHERE id IN "
        "(SELECT message_row_id FROM intake WHERE dedupe_key LIKE 'dup:%' AND message_row_id IS NOT NULL)"
    ).bindparams(yes=True))
    op.create_index('ix_messages_message_id_lookup', 'messages', ['message_id'], unique=False,
                    sqlite_where=sa.text(LOOKUP), postgresql_where=sa.text(LOOKUP))
    op.drop_index('ix_messages_message_id', table_name='messages')


def downgrade() -> None:
    op.create_index('ix_messages_message_id', 'messages', ['message_id'], unique=False)
    op.drop_index('ix_messages_message_id_lookup', table_name='messages')
    op.drop_column('messages', 'reused_id')
