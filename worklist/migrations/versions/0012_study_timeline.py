"""study timeline: when a study was acquired, uploaded by its gateway and arrived at the
county, and the gateway's clock against the county's; events found by study

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMES = (
    'acquired_at',
    'acquired_last_at',
    'uploaded_first_at',
    'uploaded_last_at',
    'arrived_at',
    'arrived_last_at',
)


def upgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        for name in _TIMES:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('gateway_clock_offset_seconds', sa.Float(), nullable=True))
    op.create_index('ix_events_study_uid', 'events', ['study_uid', 'id'])


def downgrade() -> None:
    op.drop_index('ix_events_study_uid', table_name='events')
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('gateway_clock_offset_seconds')
        for name in reversed(_TIMES):
            batch.drop_column(name)
