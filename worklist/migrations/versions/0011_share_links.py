"""share links: a report's links without a log-in, stored (as a token hash) and revocable

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'share_links',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('token_sha256', sa.String(64), nullable=False, unique=True),
        sa.Column(
            'study_id',
            sa.Integer(),
            sa.ForeignKey('studies.id', ondelete='CASCADE'),
            nullable=False,
        ),
        sa.Column('created_by_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
    )
    op.create_index('ix_share_links_study_id', 'share_links', ['study_id'])


def downgrade() -> None:
    op.drop_index('ix_share_links_study_id', table_name='share_links')
    op.drop_table('share_links')
