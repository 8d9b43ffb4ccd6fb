"""turn usage and cost

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('turns') as batch:
        batch.add_column(sa.Column('usage', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('cost_usd', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('turns') as batch:
        batch.drop_column('cost_usd')
        batch.drop_column('usage')
