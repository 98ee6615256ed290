"""a consultant's mail keeps whether the intake took it as an answer to the customer

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 04:10:00

The month report judged a consultant's mail by its stored text (words once the
command block is off), the intake by the text and the files: an answer of an
attached file alone was relayed and made the ticket's first answer, and the
report counted no answer. ``messages.answered`` keeps the intake's decision, and
the report counts it (``billing.month.answered_the_customer``). Rows stored
before the upgrade keep NULL and are judged by their text as before: nothing is
rewritten, the upgrade adds one empty column.
"""
import sqlalchemy as sa
from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('answered', sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column('messages', 'answered')
