"""device requests remember the execution version their answer produced

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision carry no execution: they are never replayed again.
    with op.batch_alter_table("device_requests") as batch:
        batch.add_column(sa.Column("job_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("execution_number", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("version_number", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_requests") as batch:
        batch.drop_column("version_number")
        batch.drop_column("execution_number")
        batch.drop_column("job_id")
