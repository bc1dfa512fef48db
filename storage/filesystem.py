"""An object store in a local directory: one file per key, crash-safe writes.

Layout under ``root``: the key's path, e.g. ``<study>/<series>/<sop>.dcm``, holds the bytes
exactly as stored, next to a hidden sidecar ``.<sop>.dcm.meta`` (JSON: sha256, content type,
and the size and mtime of the data file it describes). Keys never have a component starting
with ``.`` (``storage.keys.check_key``), so temp files and sidecars cannot collide with keys
and ``list()`` skips every dot-name.

A write goes to a temp file in the same directory, is fsynced, hashed on the way, checked
against the expected sha256, then published with ``os.replace`` (sidecar first, data last)
and the directory is fsynced. A crash between the two renames leaves a sidecar that does
not match the data file's size/mtime; ``stat`` notices and re-hashes the data instead of
trusting it. Limitation (S3 has none): a key cannot also be a "directory" of other keys,
e.g. ``a/b`` and ``a/b/c`` cannot both exist; the second raises ``InvalidKey``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import stat as stat_mod
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from storage._io import CHUNK_SIZE, DEFAULT_CONTENT_TYPE, iter_chunks, normalize_sha256
from storage.base import ObjectInfo
from storage.errors import IntegrityError, InvalidKey, ObjectNotFound
from storage.keys import check_key, check_prefix

logger = logging.getLogger(__name__)

_SIDECAR_SUFFIX = ".meta"
_TEMP_SUFFIX = ".tmp"


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - Windows cannot open a directory
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}{_SIDECAR_SUFFIX}")


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC)


class FilesystemStore:
    """``storage.base.ObjectStore`` over a local directory. Its directories are made 0700
    and its files 0600 (``mkstemp``): DICOM files are patient data."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _make_parents(self, directory: Path, key: str) -> None:
        """Create missing directories one by one, fsyncing each new entry's parent."""
        missing: builtins.list[Path] = []
        current = directory
        while not current.is_dir():
            if current == self.root or current.exists():
                raise InvalidKey(f"key conflicts with an existing object: {key[:80]!r}")
            missing.append(current)
            current = current.parent
        for new_dir in reversed(missing):
            try:
                new_dir.mkdir(mode=0o700)
            except FileExistsError:
                if not new_dir.is_dir():
                    raise InvalidKey(
                        f"key conflicts with an existing object: {key[:80]!r}"
                    ) from None
                continue  # a concurrent writer made it
            _fsync_dir(new_dir.parent)

    # -- writing -------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        size: int | None = None,
        content_type: str = "application/dicom",
        sha256: str | None = None,
    ) -> ObjectInfo:
        path = self._path(key)
        expected = normalize_sha256(sha256)
        self._make_parents(path.parent, key)
        if path.is_dir():
            raise InvalidKey(f"key conflicts with existing keys: {key[:80]!r}")
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX
        )
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_chunks(data, size):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise IntegrityError(f"sha256 mismatch for {key}: got {actual}")
            meta = {
                "sha256": actual,
                "content_type": content_type,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
            self._write_sidecar(path, meta)
            try:
                os.replace(tmp, path)
            except IsADirectoryError:  # a concurrent put made a directory of this key
                _sidecar(path).unlink(missing_ok=True)
                raise InvalidKey(f"key conflicts with existing keys: {key[:80]!r}") from None
            _fsync_dir(path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        logger.debug(
            "object stored", extra={"action": "object_stored", "key": key, "size": st.st_size}
        )
        return ObjectInfo(key, st.st_size, actual, content_type, _mtime(st))

    def _write_sidecar(self, path: Path, meta: dict[str, Any]) -> None:
        sidecar = _sidecar(path)
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f"{sidecar.name}.", suffix=_TEMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(meta, sort_keys=True).encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, sidecar)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is a no-op (as in S3)."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except PermissionError:
            if path.is_dir():  # macOS says EPERM for unlink() of a directory
                return
            raise
        _sidecar(path).unlink(missing_ok=True)
        _fsync_dir(path.parent)
        logger.debug("object deleted", extra={"action": "object_deleted", "key": key})

    def sweep_temp_files(self, *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove temp files left by writes that crashed; returns how many."""
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                    candidate = Path(dirpath, name)
                    try:
                        if candidate.stat().st_mtime < cutoff:
                            candidate.unlink()
                            removed += 1
                    except FileNotFoundError:
                        continue
        return removed

    # -- reading -------------------------------------------------------------------------

    def _file_stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key}") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"no object {key}")
        return path, st

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return builtins.open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key}") from None

    def stat(self, key: str) -> ObjectInfo:
        path, st = self._file_stat(key)
        meta = self._read_sidecar(path)
        if (
            meta is not None
            and meta.get("size") == st.st_size
            and meta.get("mtime_ns") == st.st_mtime_ns
            and isinstance(meta.get("sha256"), str)
        ):
            return ObjectInfo(
                key,
                st.st_size,
                meta["sha256"],
                str(meta.get("content_type") or DEFAULT_CONTENT_TYPE),
                _mtime(st),
            )
        # The sidecar is missing or describes another version (a crash between the two
        # renames of a put, or a concurrent overwrite): trust the bytes, not the sidecar.
        logger.warning(
            "object sidecar missing or stale; re-hashing",
            extra={"action": "object_sidecar_stale", "key": key},
        )
        digest = hashlib.sha256()
        with builtins.open(path, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                digest.update(chunk)
        return ObjectInfo(key, st.st_size, digest.hexdigest(), DEFAULT_CONTENT_TYPE, _mtime(st))

    def _read_sidecar(self, path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(_sidecar(path).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def exists(self, key: str) -> bool:
        try:
            self._file_stat(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in byte order of their keys.

        ``sha256`` is None and ``content_type`` empty here (as from S3 listings); ask
        ``stat`` for them.
        """
        check_prefix(prefix)
        head, _, _partial = prefix.rpartition("/")
        start = self.root.joinpath(*head.split("/")) if head else self.root
        return self._walk(start, f"{head}/" if head else "", prefix)

    def _walk(self, directory: Path | str, key_prefix: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting a directory's names with "/" appended to subdirectories yields the keys
        # in plain byte order, the way S3 specifies listings.
        tagged = sorted(
            ((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in entries
        )
        for name, entry in tagged:
            key = key_prefix + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(entry.path, key, prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we walked
                yield ObjectInfo(key, st.st_size, None, "", _mtime(st))

    def presigned_get(self, key: str, *, expires: timedelta) -> str | None:
        check_key(key)
        return None
