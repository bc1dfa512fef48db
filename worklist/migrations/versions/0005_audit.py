"""audit: the database refuses UPDATE on audit_events (append-only)

The application never updates an audit event; this makes the database refuse it too, so
neither a bug nor a casual ``UPDATE`` by hand can rewrite the trail. DELETE stays allowed:
retention (``worklist.retention``) removes events past their retention period. A database
owner can still drop the trigger; this guards against mistakes, not against the owner.
On SQLite a later ``batch_alter_table('audit_events')`` recreates the table and drops the
trigger with it: such a migration must create the trigger again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE = 'audit_events is append-only: UPDATE is not allowed'


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            'CREATE FUNCTION audit_events_refuse_update() RETURNS trigger '
            'LANGUAGE plpgsql AS $$ BEGIN '
            f"RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
            'END $$'
        )
        op.execute(
            'CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events '
            'FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_update()'
        )
    else:
        op.execute(
            'CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events '
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events')
        op.execute('DROP FUNCTION IF EXISTS audit_events_refuse_update()')
    else:
        op.execute('DROP TRIGGER IF EXISTS audit_events_append_only')
