"""PostgreSQL compresses an outbox row's context with lz4, not pglz

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 04:10:00

A row whose context makes it longer than ~2 kB (a notification with a long
customer text, every one before the commands' help left it) has its context
compressed when it is written, and decompressed by the courier's claim. With
PostgreSQL's own pglz that compression was a fifth of the server's instructions
for COPYing a working day's outbox (bench/README, fifteenth session: ``cg_marks``
COPYMODE). lz4 (PostgreSQL 14 and later, when the server was built with it: the
values ``default_toast_compression`` takes) does the same job at a fraction of
the cost. Rows written before keep their pglz values (each value carries its
method); SQLite is not concerned.

Revises 0018 on this branch: 0019 is another helper's; at the merge this revises
whichever is the head before it.
"""
import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def _lz4_available(bind: sa.engine.Connection) -> bool:
    values = bind.execute(sa.text(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")).scalar()
    return values is not None and "lz4" in values


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _lz4_available(bind):
        op.execute("ALTER TABLE outbox ALTER COLUMN context SET COMPRESSION lz4")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _lz4_available(bind):
        op.execute("ALTER TABLE outbox ALTER COLUMN context SET COMPRESSION default")
