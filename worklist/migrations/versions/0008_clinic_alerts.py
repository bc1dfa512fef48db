"""clinic alerts: a critical result's acknowledgement by the clinic, overdue studies,
call-ahead announcements of urgent patients, and each township gateway's last status report

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('critical_results') as batch:
        batch.add_column(sa.Column('acknowledged_by_id', sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_foreign_key(
            'fk_critical_results_acknowledged_by_id_users', 'users',
            ['acknowledged_by_id'], ['id'],
        )
    op.add_column(
        'studies', sa.Column('overdue_at', sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        'call_aheads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('patient_id', sa.String(length=64), nullable=False),
        sa.Column('patient_name', sa.String(length=200), nullable=False),
        sa.Column('category', sa.String(length=32), nullable=False),
        sa.Column('onset_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=True),
        sa.Column('matched_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cancelled_by_id', sa.Integer(), nullable=True),
        sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id']),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id']),
        sa.ForeignKeyConstraint(['cancelled_by_id'], ['users.id']),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('study_id', name='uq_call_aheads_study_id'),
    )
    op.create_index('ix_call_aheads_site_pending', 'call_aheads', ['site_id', 'expires_at'])
    op.create_table(
        'gateway_status',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id'),
    )


def downgrade() -> None:
    op.drop_table('gateway_status')
    op.drop_index('ix_call_aheads_site_pending', table_name='call_aheads')
    op.drop_table('call_aheads')
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('overdue_at')
    with op.batch_alter_table('critical_results') as batch:
        batch.drop_constraint('fk_critical_results_acknowledged_by_id_users', type_='foreignkey')
        batch.drop_column('acknowledged_at')
        batch.drop_column('acknowledged_by_id')
