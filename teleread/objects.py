"""`teleread storage setup|migrate-keys`: the county's object store, set up and kept in step
with the index. Composition only: the key rules live in ``storage.keys``, the rows in
``worklist``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from minio.versioningconfig import ENABLED, VersioningConfig
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.base import ObjectStore
from storage.errors import ObjectNotFound
from storage.keys import instance_key
from storage.minio_store import MinioStore
from worklist.models import Instance, Series, Site, Study

logger = logging.getLogger(__name__)


def setup_bucket(store: ObjectStore) -> str:
    """Create the bucket if missing and keep every version of every object (S3 bucket
    versioning): a township credential that overwrote or deleted an object, or a mistake by
    hand, can be undone. A directory store needs nothing (back it up; docs/backup.md)."""
    if not isinstance(store, MinioStore):
        return f"{store!r}: a directory, nothing to set up (back it up with rsync)"
    store.ensure_bucket()
    store.client.set_bucket_versioning(store.bucket, VersioningConfig(ENABLED))
    status = store.client.get_bucket_versioning(store.bucket).status
    return f"bucket {store.bucket}: versioning {status}"


@dataclass
class KeyMigration:
    moved: int = 0
    already: int = 0  # the object was under its new key already (an earlier, broken run)
    skipped: int = 0  # missing under both keys, or other bytes than the index's: reported
    remaining: int = 0  # a dry run, or one stopped by ``limit``: still to do


@dataclass(frozen=True)
class _Legacy:
    instance_id: int
    old_key: str
    new_key: str
    sha256: str
    sop_uid: str


def _legacy(session: Session, *, after: int, limit: int) -> list[_Legacy]:
    """Instances whose key lacks their site's prefix, by id, from ``after`` on."""
    rows = session.execute(
        select(
            Instance.id,
            Instance.object_key,
            Instance.sha256,
            Instance.sop_instance_uid,
            Series.series_instance_uid,
            Study.study_instance_uid,
            Site.code,
        )
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Instance.study_id == Study.id)
        .join(Site, Study.site_id == Site.id)
        .where(~Instance.object_key.startswith(Site.code + "/"), Instance.id > after)
        .order_by(Instance.id)
        .limit(limit)
    ).all()
    return [
        _Legacy(id_, key, instance_key(site, study, series, sop), sha, sop)
        for id_, key, sha, sop, series, study, site in rows
    ]


def migrate_keys(
    *,
    factory: sessionmaker[Session],
    store: ObjectStore,
    dry_run: bool = False,
    limit: int | None = None,
    batch: int = 200,
) -> KeyMigration:
    """Move the objects stored before keys had a site prefix under their site's prefix
    (``storage.keys.instance_key``): copy, check the sha256 the index holds, point the index
    at the new key, then delete the old object. Safe to stop and run again; the API keeps
    serving throughout (the index names a key that holds the object at every moment)."""
    done = KeyMigration()
    after = 0
    while True:
        with factory() as session:
            todo = _legacy(session, after=after, limit=batch)
        if not todo:
            return done
        for item in todo:
            if dry_run or (limit is not None and done.moved + done.already >= limit):
                done.remaining += 1
                continue
            _move(factory, store, item, done)
        after = todo[-1].instance_id


def _move(
    factory: sessionmaker[Session], store: ObjectStore, item: _Legacy, done: KeyMigration
) -> None:
    log = {"sop_uid": item.sop_uid, "key": item.old_key}
    try:
        data: bytes | None = store.get(item.old_key)
    except ObjectNotFound:
        data = None
    if data is not None:
        if hashlib.sha256(data).hexdigest() != item.sha256:
            logger.error(
                "stored object differs from the index's sha256: not moved",
                extra={"action": "key_migration_mismatch", **log},
            )
            done.skipped += 1
            return
        store.put(item.new_key, data, sha256=item.sha256)
    else:  # an earlier run copied it, then stopped before pointing the index at it
        try:
            present = store.stat(item.new_key)
        except ObjectNotFound:
            present = None
        if present is None or (present.sha256 and present.sha256 != item.sha256):
            logger.error(
                "object missing under its key: index left as it is",
                extra={"action": "key_migration_missing", **log},
            )
            done.skipped += 1
            return
    with factory.begin() as session:
        row = session.get(Instance, item.instance_id)
        if row is not None and row.object_key == item.old_key:
            row.object_key = item.new_key
    if data is not None:
        store.delete(item.old_key)
        done.moved += 1
    else:
        done.already += 1
