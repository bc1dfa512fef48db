"""deadlines and claims: the final report's deadline; claim warnings and expired claims

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.add_column(sa.Column('claim_warned_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('claim_expired_by_id', sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column('claim_expired_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column('final_deadline_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_foreign_key(
            'fk_studies_claim_expired_by_id_users', 'users', ['claim_expired_by_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.drop_constraint('fk_studies_claim_expired_by_id_users', type_='foreignkey')
        batch.drop_column('final_deadline_at')
        batch.drop_column('claim_expired_at')
        batch.drop_column('claim_expired_by_id')
        batch.drop_column('claim_warned_at')
