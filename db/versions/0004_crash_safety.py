"""crash safety: a turn stored before it is answered, a call's owner and why it ended

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('turns') as batch:
        batch.add_column(sa.Column('answered', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('owner', sa.String(128), nullable=True))
        batch.add_column(sa.Column('end_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('end_reason')
        batch.drop_column('owner')
    with op.batch_alter_table('turns') as batch:
        batch.drop_column('answered')
