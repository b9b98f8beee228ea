"""thing registration tasks (bulk registration) and their report parts

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-12 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "thing_registration_tasks",
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("template_body", sa.Text(), nullable=False),
        sa.Column("input_file_bucket", sa.String(length=256), nullable=False),
        sa.Column("input_file_key", sa.Text(), nullable=False),
        sa.Column("role_arn", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("success_count", sa.BigInteger(), nullable=False),
        sa.Column("failure_count", sa.BigInteger(), nullable=False),
        sa.Column("input_size", sa.BigInteger(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("next_line", sa.BigInteger(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.Float(precision=53), nullable=True),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("last_modified_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("task_id"),
    )
    with op.batch_alter_table("thing_registration_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_thing_registration_tasks_status"), ["status"], unique=False)

    op.create_table(
        "thing_registration_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("report_type", sa.String(length=16), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(length=256), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["thing_registration_tasks.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "report_type", "part"),
    )


def downgrade() -> None:
    op.drop_table("thing_registration_reports")
    with op.batch_alter_table("thing_registration_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_thing_registration_tasks_status"))
    op.drop_table("thing_registration_tasks")
