"""retention, forget and compaction find a blob's rows through indexes, not by reading history whole

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 13:20:00

Whether a pack_index row is still needed (``compact.referenced``, run by
retention and ``maild forget`` for every blob they let go of) read the whole
messages table for each 500 hashes: 0.9 s per 500 at 2.5M message rows
(bench/README "Blob lookups, ninth session"). Only a message row that finds its
raw mail by hash needs pack_index; a row that places it (0011) does not. The
partial index ``ix_messages_raw_by_hash`` holds the former: the rows stored
before 0011. Mail stored since is placed, so ingest writes nothing into it.

Compaction listed a pack's blobs by reading pack_index whole once per pack;
``ix_pack_index_pack`` gives them in the pack's order. Its keys arrive in
(pack, offset) order as blobs are appended to the newest pack: a batch's
attachments land in one leaf.
"""
import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BY_HASH = "raw_pack IS NULL AND raw_sha256 IS NOT NULL"


def upgrade() -> None:
    op.create_index('ix_messages_raw_by_hash', 'messages', ['raw_sha256'], unique=False,
                    sqlite_where=sa.text(BY_HASH), postgresql_where=sa.text(BY_HASH))
    op.create_index('ix_pack_index_pack', 'pack_index', ['pack', 'offset'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pack_index_pack', table_name='pack_index')
    op.drop_index('ix_messages_raw_by_hash', table_name='messages')
