"""Files and directories readable by this user only: the spool holds patients' images and
names, so its directory is 0700 and every file in it 0600, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) with mode 0700; an existing one is made so too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create ``path`` if missing with mode 0600 (SQLite gives a database's ``-wal`` and
    ``-shm`` files the database's mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
