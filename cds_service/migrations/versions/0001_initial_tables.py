"""The tables as the service created them before migrations: feedback, audit, audit_card, seen_jti.

A database created then (by `CREATE TABLE IF NOT EXISTS` at start) has exactly these and no alembic_version
table: `Storage.upgrade` stamps it at this revision instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("card_uuid", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("override_reason", sa.JSON),
        sa.Column("user_comment", sa.Text),
        sa.Column("accepted_suggestions", sa.JSON),
        sa.Column("outcome_timestamp", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(256), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("cards", sa.JSON, nullable=False),
        sa.Column("catalog_version", sa.String(128), nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_audit_hook_instance", "audit", ["hook_instance"])
    op.create_table(
        "audit_card",
        sa.Column("card_uuid", sa.String(256), primary_key=True),
        sa.Column("audit_id", sa.Integer, nullable=False),
        sa.Column("nct_id", sa.String(64)),
        sa.Column("verdict", sa.String(40)),
    )
    op.create_table(
        "seen_jti",
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_seen_jti_expires_at", "seen_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("seen_jti")
    op.drop_table("audit_card")
    op.drop_table("audit")
    op.drop_table("feedback")
