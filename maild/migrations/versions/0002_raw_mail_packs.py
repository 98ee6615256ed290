"""raw mail in packs: the raw_mail index

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
    op.create_table('raw_mail',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('pack', sa.String(length=40), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_raw_mail'))
    )


def downgrade() -> None:
    # Raw mail stored in packs stays readable only through this table; a
    # downgrade keeps the packs but the older version reads loose files only.
    op.drop_table('raw_mail')
