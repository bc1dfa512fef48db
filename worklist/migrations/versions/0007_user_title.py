"""users: a professional title printed under the signer's name on reports

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'users', sa.Column('title', sa.String(100), nullable=False, server_default='')
    )


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('title')
