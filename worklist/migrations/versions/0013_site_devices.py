"""site devices: the networks a site's modalities call from and their TLS client
certificates (a site with neither accepts its AE titles from anywhere, as before)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'site_networks',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column(
            'site_id', sa.Integer(), sa.ForeignKey('sites.id', ondelete='CASCADE'), nullable=False
        ),
        sa.Column('network', sa.String(49), nullable=False),
        sa.UniqueConstraint('site_id', 'network'),
    )
    op.create_table(
        'site_certificates',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column(
            'site_id', sa.Integer(), sa.ForeignKey('sites.id', ondelete='CASCADE'), nullable=False
        ),
        sa.Column('sha256', sa.String(64), nullable=False, unique=True),
        sa.Column('label', sa.String(200), nullable=False, server_default=''),
    )


def downgrade() -> None:
    op.drop_table('site_certificates')
    op.drop_table('site_networks')
