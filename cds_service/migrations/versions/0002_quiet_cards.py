"""Quiet cards: operators' lifts of a quiet, and the indexes that find a patient's answered cards.

`Storage.quieted` runs on every patient-view call: from the patient's audit rows (patient_id) to their cards
(audit_id) to the feedback on them (card_uuid, indexed since 0001).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_patient_id", "audit", ["patient_id"])
    op.create_index("ix_audit_card_audit_id", "audit_card", ["audit_id"])
    op.create_table(
        "quiet_lift",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("nct_id", sa.String(64)),
        sa.Column("lifted_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_quiet_lift_patient_id", "quiet_lift", ["patient_id"])


def downgrade() -> None:
    op.drop_table("quiet_lift")
    op.drop_index("ix_audit_card_audit_id", "audit_card")
    op.drop_index("ix_audit_patient_id", "audit")
