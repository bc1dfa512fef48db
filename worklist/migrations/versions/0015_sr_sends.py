"""sr sends: each site's DICOM destination for its reports' SRs, and the SRs queued for it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(
            sa.Column('sr_destination', sa.String(128), nullable=False, server_default='')
        )
    op.create_table(
        'sr_sends',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column(
            'study_id',
            sa.Integer(),
            sa.ForeignKey('studies.id', ondelete='CASCADE'),
            nullable=False,
            unique=True,
        ),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('reason', sa.String(32), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('destination', sa.String(128), nullable=False),
        sa.Column('sop_instance_uid', sa.String(64), nullable=False),
    )
    op.create_index('ix_sr_sends_due', 'sr_sends', ['status', 'next_attempt_at'])


def downgrade() -> None:
    op.drop_index('ix_sr_sends_due', table_name='sr_sends')
    op.drop_table('sr_sends')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('sr_destination')
