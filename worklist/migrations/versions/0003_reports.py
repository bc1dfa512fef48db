"""reports: addenda, critical results, the reason a critical report had none

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('reports', sa.Column('no_critical_result_reason', sa.Text(), nullable=True))
    op.create_table('report_addenda',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['report_id'], ['reports.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_report_addenda_report_id'), 'report_addenda', ['report_id'], unique=False)
    op.create_table('critical_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('finding', sa.Text(), nullable=False),
    sa.Column('identified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('communicated_to_name', sa.String(length=200), nullable=False),
    sa.Column('communicated_to_role', sa.String(length=100), nullable=False),
    sa.Column('communicated_to_phone', sa.String(length=64), nullable=False),
    sa.Column('communicated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('read_back_confirmed', sa.Boolean(), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_critical_results_study_id'), 'critical_results', ['study_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_critical_results_study_id'), table_name='critical_results')
    op.drop_table('critical_results')
    op.drop_index(op.f('ix_report_addenda_report_id'), table_name='report_addenda')
    op.drop_table('report_addenda')
    with op.batch_alter_table('reports') as batch:
        batch.drop_column('no_critical_result_reason')
