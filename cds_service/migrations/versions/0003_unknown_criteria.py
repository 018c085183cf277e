"""The ids of the criteria still to check (`unknown`) on each card shown, for `cds-trials feedback stats`.

Ids only, never a patient's values. Cards shown before this revision have NULL: not known.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_card", sa.Column("unknown_criteria", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("audit_card") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("unknown_criteria")
