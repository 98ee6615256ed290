"""drop the index on intake.source_key, which no query reads

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:30:00

Every mail read writes one intake row, and each row was also inserted into
ix_intake_source_key (16,400 pages, 64 MB at a million mails). No statement of
maild looks an intake row up by where it was read: the exactly-once check goes
by ``dedupe_key`` (unique) and the attempts by the failures table's key.
tests/storage/test_unused_index.py runs ingest, status, the reports and the
ticket commands with the index in place and finds no plan that uses it.
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_intake_source_key', table_name='intake')


def downgrade() -> None:
    op.create_index('ix_intake_source_key', 'intake', ['source_key'], unique=False)
