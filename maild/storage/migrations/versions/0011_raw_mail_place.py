"""a stored mail's raw bytes found through its message row, not through pack_index's sha256 key

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:30:00

Every raw mail had a pack_index row keyed by its sha256: a random key, so each
mail dirtied a leaf of a million-row B-tree (~3,050 of the 9,555 WAL pages a
2,000-mail ingest wrote at 1M mails, against 130 on an empty database:
bench/README "Ingest at 1M, seventh session"), for bytes nothing looks up by
hash: a raw mail is read as its message's. The message row now carries the
place (``raw_pack``, ``raw_offset``, ``raw_length``); pack_index keeps the
attachments (packed once per content, so found by hash), the raw mail no
message row places (a discarded mail: a later copy of the same bytes is known
by its hash) and every row written before. ``ix_messages_raw_pack`` (partial:
placed rows only) gives compaction a pack's raw mail; its keys arrive in
(pack, offset) order. Nothing is moved: the upgrade adds three empty columns
and an empty index.

It also drops ix_tickets_contract_id: no statement reads tickets by contract
(tests/storage/test_unused_index.py), and a batch's new tickets wrote a leaf per
contract into it (~310 WAL pages per 2,000 mails at 1M).
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PLACED = "raw_pack IS NOT NULL"


def upgrade() -> None:
    op.add_column('messages', sa.Column('raw_pack', sa.String(length=40), nullable=True))
    op.add_column('messages', sa.Column('raw_offset', sa.BigInteger(), nullable=True))
    op.add_column('messages', sa.Column('raw_length', sa.BigInteger(), nullable=True))
    op.create_index('ix_messages_raw_pack', 'messages', ['raw_pack', 'raw_offset'], unique=False,
                    sqlite_where=sa.text(PLACED), postgresql_where=sa.text(PLACED))
    op.drop_index('ix_tickets_contract_id', table_name='tickets')


def downgrade() -> None:
    # the places written since the upgrade go back to pack_index, where 0010's code looks for them
    select = ('SELECT raw_sha256, raw_pack, raw_offset, raw_length FROM messages '
              'WHERE raw_pack IS NOT NULL AND raw_sha256 IS NOT NULL ORDER BY id')
    columns = 'pack_index (sha256, pack, "offset", length)'
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(sa.text(f'INSERT OR IGNORE INTO {columns} {select}'))
    else:
        op.execute(sa.text(f'INSERT INTO {columns} {select} ON CONFLICT DO NOTHING'))
    op.create_index('ix_tickets_contract_id', 'tickets', ['contract_id'], unique=False)
    op.drop_index('ix_messages_raw_pack', table_name='messages')
    op.drop_column('messages', 'raw_length')
    op.drop_column('messages', 'raw_offset')
    op.drop_column('messages', 'raw_pack')
