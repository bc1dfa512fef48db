"""workflow: escalation and cancellation on studies, events, webhook deliveries, indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_STUDY_SQL = "status NOT IN ('cancelled', 'final', 'amended')"
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(
            sa.Column("escalation_level", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("cancelled_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
        batch.create_foreign_key(
            "fk_studies_cancelled_by_id_users", "users", ["cancelled_by_id"], ["id"]
        )
    op.create_index(
        "ix_studies_open_queue",
        "studies",
        ["priority_rank", "received_at", "id"],
        postgresql_include=["modalities", "claimed_by_id"],
        postgresql_where=sa.text(OPEN_STUDY_SQL),
        sqlite_where=sa.text(OPEN_STUDY_SQL),
    )
    op.create_index(
        "ix_studies_open_category",
        "studies",
        ["category", "priority_rank", "received_at", "id"],
        postgresql_where=sa.text(OPEN_STUDY_SQL),
        sqlite_where=sa.text(OPEN_STUDY_SQL),
    )
    op.create_index(
        "ix_studies_open_site_queue",
        "studies",
        ["site_id", "priority_rank", "received_at", "id"],
        postgresql_where=sa.text(OPEN_STUDY_SQL),
        sqlite_where=sa.text(OPEN_STUDY_SQL),
    )
    op.create_index("ix_studies_claimed_by", "studies", ["claimed_by_id"])

    op.create_table(
        "events",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index("ix_events_site_id", "events", ["site_code", "id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("event_id", _BIGINT, nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "url", name="uq_webhook_deliveries_event_url"),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_events_site_id", table_name="events")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_studies_claimed_by", table_name="studies")
    op.drop_index("ix_studies_open_site_queue", table_name="studies")
    op.drop_index("ix_studies_open_category", table_name="studies")
    op.drop_index("ix_studies_open_queue", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        batch.drop_constraint("fk_studies_cancelled_by_id_users", type_="foreignkey")
        batch.drop_column("cancel_reason")
        batch.drop_column("cancelled_at")
        batch.drop_column("cancelled_by_id")
        batch.drop_column("escalation_level")
