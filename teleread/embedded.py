"""The embedded default: one data directory holding the SQLite index, the object store,
the gateway's spool and the secrets that must survive restarts. The directory is private
(0700: made so, or tightened at start when it was not), so no other local user reads the
patient data, report text, password hashes and DICOM files under it."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("teleread-data")


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @classmethod
    def resolve(cls, value: str | os.PathLike[str] | None) -> DataDir:
        raw = value or os.environ.get("TELEREAD_DATA_DIR") or DEFAULT_DATA_DIR
        root = Path(raw).expanduser().resolve()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(root.stat().st_mode)
        if mode & 0o077:
            os.chmod(root, 0o700)
            logger.warning(
                "data directory was readable by other users; made private (0700)",
                extra={"action": "data_dir_made_private", "mode": oct(mode)},
            )
        return cls(root)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.root / 'teleread.db'}"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def logins_file(self) -> Path:
        return self.root / "demo-logins.txt"

    def secret(self, name: str) -> str:
        """A random secret kept in the data directory (mode 0600), made on first use."""
        path = self.root / f"{name}.secret"
        try:
            return path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return value


def database_url(data_dir: DataDir | None, explicit: str | None) -> str:
    """The database URL: an explicit one, the environment's, or the data directory's SQLite."""
    if explicit:
        return explicit
    env = os.environ.get("TELEREAD_WORKLIST_DATABASE_URL")
    if env:
        return env
    return (data_dir or DataDir.resolve(None)).database_url
