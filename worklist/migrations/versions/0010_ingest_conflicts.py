"""ingest conflicts: announced instances held for an admin (study UID of another site,
series of another study, patient differing from the study's)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'ingest_conflicts',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('site_id', sa.Integer(), sa.ForeignKey('sites.id'), nullable=False),
        sa.Column('calling_ae', sa.String(16), nullable=False),
        sa.Column('kind', sa.String(32), nullable=False),
        sa.Column('study_instance_uid', sa.String(64), nullable=False),
        sa.Column('series_instance_uid', sa.String(64), nullable=False),
        sa.Column('sop_instance_uid', sa.String(64), nullable=False),
        sa.Column('object_key', sa.String(255), nullable=False, unique=True),
        sa.Column('existing_study_uid', sa.String(64), nullable=False),
        sa.Column('existing_site_id', sa.Integer(), sa.ForeignKey('sites.id'), nullable=True),
        sa.Column('patient_id', sa.String(64), nullable=False),
        sa.Column('patient_name', sa.String(200), nullable=False),
        sa.Column('existing_patient_id', sa.String(64), nullable=False),
        sa.Column('existing_patient_name', sa.String(200), nullable=False),
        sa.Column('arrival', sa.JSON(), nullable=False),
        sa.Column('held_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resolution', sa.String(16), nullable=True),
        sa.Column('resolved_by_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resolved_study_uid', sa.String(64), nullable=True),
    )
    op.create_index(
        'ix_ingest_conflicts_study_instance_uid', 'ingest_conflicts', ['study_instance_uid']
    )
    op.create_index('ix_ingest_conflicts_open', 'ingest_conflicts', ['resolved_at', 'held_at'])


def downgrade() -> None:
    op.drop_index('ix_ingest_conflicts_open', table_name='ingest_conflicts')
    op.drop_index('ix_ingest_conflicts_study_instance_uid', table_name='ingest_conflicts')
    op.drop_table('ingest_conflicts')
