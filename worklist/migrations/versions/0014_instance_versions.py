"""instance versions: re-sent instances (other bytes under a filed SOP Instance UID), the
calling AE of each instance's served version, and the flag of a study updated after its report

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.add_column(
            sa.Column('calling_ae', sa.String(16), nullable=False, server_default='')
        )
    with op.batch_alter_table('studies') as batch:
        batch.add_column(
            sa.Column('updated_after_report_at', sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        'instance_versions',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column(
            'instance_id',
            sa.Integer(),
            sa.ForeignKey('instances.id', ondelete='CASCADE'),
            nullable=False,
        ),
        sa.Column(
            'study_id', sa.Integer(), sa.ForeignKey('studies.id', ondelete='CASCADE'), nullable=False
        ),
        sa.Column('sop_instance_uid', sa.String(64), nullable=False),
        sa.Column('series_instance_uid', sa.String(64), nullable=False),
        sa.Column('object_key', sa.String(255), nullable=False, unique=True),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('transfer_syntax_uid', sa.String(64), nullable=False),
        sa.Column('calling_ae', sa.String(16), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dicom_json', sa.JSON(), nullable=True),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
    )
    op.create_index('ix_instance_versions_instance_id', 'instance_versions', ['instance_id'])
    op.create_index('ix_instance_versions_study_id', 'instance_versions', ['study_id'])


def downgrade() -> None:
    op.drop_index('ix_instance_versions_study_id', table_name='instance_versions')
    op.drop_index('ix_instance_versions_instance_id', table_name='instance_versions')
    op.drop_table('instance_versions')
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('updated_after_report_at')
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('calling_ae')
