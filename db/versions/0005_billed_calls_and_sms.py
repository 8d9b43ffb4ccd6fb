"""billed: whether Twilio bills a call or an SMS (a simulated one on loopback costs nothing)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('billed', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('sms_messages') as batch:
        batch.add_column(sa.Column('billed', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sms_messages') as batch:
        batch.drop_column('billed')
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('billed')
