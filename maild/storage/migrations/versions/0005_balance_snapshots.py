"""balance snapshots: what a contract's month statement needs from the months before it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:00:00

``report hours --month`` summed every ledger row ever booked for sla carry-over
and package balances (9 s at 16 years of history). A row per contract and
month holds that figure; the table starts empty and the first report computes
and stores what it needs.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('balance_snapshots',
    sa.Column('contract_id', sa.String(length=100), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('terms', sa.String(length=64), nullable=False),
    sa.Column('drawn_minutes', sa.Integer(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('computed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('contract_id', 'month', name=op.f('pk_balance_snapshots'))
    )


def downgrade() -> None:
    op.drop_table('balance_snapshots')
