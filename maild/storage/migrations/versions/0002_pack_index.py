"""raw mail and attachments in packs: the pack_index table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pack_index',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('pack', sa.String(length=40), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_pack_index'))
    )


def downgrade() -> None:
    # Blobs stored in packs are readable only through this table; a downgrade
    # keeps the packs, but the older version reads loose files only.
    op.drop_table('pack_index')
