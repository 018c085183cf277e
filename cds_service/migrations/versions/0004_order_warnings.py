"""Order warnings (order-select, order-sign): the warnings shown, and what the audit trail says of them.

`order_warning` remembers each warning shown at order-select (patient, trial, a digest of the draft orders it
was about, the day), so that order-sign does not show it again that day for the same drafts. The digest is
a hash: no order detail is stored. The audit trail gains the hook of each call, and for each card shown its
kind (NULL: a trial card, as every card before this revision) and the ids of the draft orders it was about.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_warning",
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("nct_id", sa.String(64), primary_key=True),
        sa.Column("orders_digest", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("shown_at", sa.DateTime, nullable=False),
    )
    op.add_column("audit", sa.Column("hook", sa.String(100)))
    op.add_column("audit_card", sa.Column("kind", sa.String(20)))
    op.add_column("audit_card", sa.Column("orders", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("audit_card") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("orders")
        batch.drop_column("kind")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("hook")
    op.drop_table("order_warning")
