"""Knowing, in this process, that a commit may have changed what a worklist shows.

``StudyWrites.generation`` goes up after each commit of any ``Session`` of this process
that wrote to the ``studies`` table: a flushed ``Study`` (new, changed or deleted) or an
``INSERT``/``UPDATE``/``DELETE`` of ``Study`` run through ``Session.execute`` (the claims'
conditional updates, the sweeps). A cache of worklist pages (``viewer_api.worklist_pages``)
stamps each page with the generation it read under, so a page read before a commit is
never served after it in this process.

What it does not see: a write that went round a ``Session`` (a ``Connection`` of its own,
as the backup's restore uses) and every other process's commits. A cache that trusts it
must also bound an entry's age, and learn of other processes' changes from their events
(claims, releases, signatures, urgent studies: ``worklist.events``).
"""

from __future__ import annotations

import threading
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from worklist.models import Study

# ``Session.info`` key: this transaction wrote to ``studies``
_WROTE = "teleread_wrote_studies"


class StudyWrites:
    """The process's count of commits that wrote to ``studies`` (see the module
    docstring). ``watch`` installs the listeners on every ``Session``, once."""

    _lock = threading.Lock()
    _watching = False
    _generation = 0

    @classmethod
    def watch(cls) -> None:
        """Start counting (idempotent; the listeners stay for the process's life)."""
        with cls._lock:
            if cls._watching:
                return
            # on the Session class, so every session of the process counts: the API's,
            # and housekeeping's, the gateway's and a command's when they share it
            event.listen(Session, "after_flush", cls._after_flush)
            event.listen(Session, "do_orm_execute", cls._do_orm_execute)
            event.listen(Session, "after_commit", cls._after_commit)
            cls._watching = True

    @classmethod
    def generation(cls) -> int:
        """The count now: read it before reading the studies, keep it with what was read."""
        return cls._generation

    @classmethod
    def _after_flush(cls, session: Session, _context: UOWTransaction) -> None:
        if any(isinstance(o, Study) for o in chain(session.new, session.dirty, session.deleted)):
            session.info[_WROTE] = True

    @classmethod
    def _do_orm_execute(cls, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            table: Any = getattr(state.statement, "table", None)
            if getattr(table, "name", None) == Study.__tablename__:
                state.session.info[_WROTE] = True

    @classmethod
    def _after_commit(cls, session: Session) -> None:
        # a flag left by a transaction that rolled back only costs one needless bump here
        if session.info.pop(_WROTE, False):
            with cls._lock:
                cls._generation += 1


__all__ = ["StudyWrites"]
