"""consultants' presence: the absences table, tickets.assigned_at, an index on the assignee

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 23:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('absences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('consultant', sa.String(length=320), nullable=False),
    sa.Column('start', sa.Date(), nullable=False),
    sa.Column('until', sa.Date(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=320), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_absences'))
    )
    op.create_index(op.f('ix_absences_consultant'), 'absences', ['consultant'], unique=False)
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('assigned_at', sa.DateTime(), nullable=True))
    op.create_index('ix_tickets_assignee', 'tickets', ['assigned_to', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tickets_assignee', table_name='tickets')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_column('assigned_at')
    op.drop_index(op.f('ix_absences_consultant'), table_name='absences')
    op.drop_table('absences')
