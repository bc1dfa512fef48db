"""pydicom's own test files that are valid storage instances all go through the gateway and
are stored byte-identical (the dataset as received, behind the gateway's file meta)."""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

from gateway import status
from gateway.config import GatewaySettings
from gateway.scp import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from gateway.service import Gateway
from storage.keys import instance_key, is_valid_uid
from storage.recompressed import original_of
from tests.integration.test_gateway_support import (  # noqa: F401
    County,
    SwitchableStore,
    after_meta,
    county,
)

UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
# not valid instances, refused (0xC000) by gateway.wellformed: pixel data cut short; an
# implicit-VR dataset under the JPEG Baseline (explicit VR) transfer syntax
MALFORMED = {"MR_truncated.dcm", "SC_rgb_jpeg.dcm"}


def storage_instances() -> Iterator[tuple[Path, str, str, str]]:
    """(path, SOP class, transfer syntax, object key) of each valid Part-10 storage file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in get_testdata_files():
            path = Path(name)
            if path.name in MALFORMED:
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True)
                meta = ds.file_meta
                sop_class = str(meta.MediaStorageSOPClassUID)
                ts = str(meta.TransferSyntaxUID)
                uids = [str(ds.get(k, "")) for k in UID_KEYWORDS]
            except Exception:
                continue  # not a Part-10 file with file meta
            if sop_class not in STORAGE_SOP_CLASSES or ts not in TRANSFER_SYNTAXES:
                continue
            if not all(is_valid_uid(u) for u in uids):
                continue
            if uids[0] != sop_class or uids[1] != str(meta.MediaStorageSOPInstanceUID):
                continue  # file meta disagrees with the dataset: not a valid instance
            yield path, sop_class, ts, instance_key("TS01", uids[3], uids[2], uids[1])


def test_pydicom_testdata_byte_identical(
    tmp_path: Path,
    county: County,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = list(storage_instances())
    assert len(files) > 100
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        spool_dir=tmp_path / "spool",
        api_url=county.url,
        spool_min_free_bytes=0,
        include_dicom_json=True,
        workers=1,
    )
    store = SwitchableStore(tmp_path / "store")
    gw = Gateway(settings=settings, store=store, sites={"CT_TS01": "TS01"})
    gw.start(forward=False)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as-is
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path, sop_class, ts, _key in files:
        groups[(sop_class, ts)].append(path)
    failures: list[tuple[str, int]] = []
    order: list[Path] = []
    keys = {path: key for path, *_, key in files}
    sent_keys: set[str] = set()
    try:
        pairs = sorted(groups)
        for start in range(0, len(pairs), 100):
            ae = AE(ae_title="CT_TS01")
            for sop_class, ts in pairs[start : start + 100]:
                ae.add_requested_context(sop_class, [ts])
            assoc = ae.associate("127.0.0.1", gw.port, ae_title="TELEREAD", max_pdu=0)
            assert assoc.is_established
            for pair in pairs[start : start + 100]:
                for path in groups[pair]:
                    rsp = assoc.send_c_store(path)
                    # another file under a SOP Instance UID sent before: kept, with a warning
                    again = keys[path] in sent_keys
                    sent_keys.add(keys[path])
                    order.append(path)
                    if int(rsp.Status) not in ((0, status.STORED_BUT_HELD) if again else (0,)):
                        failures.append((path.name, int(rsp.Status)))
            assoc.release()
        assert failures == []
        gw.forwarder.drain(timeout=120)
        # several test files share a SOP Instance UID (one image in several transfer
        # syntaxes): the first sent is stored under its key, each other one beside it under
        # its version key (``storage.keys.version_key``), byte-identical too
        keys = {path: key for path, *_, key in files}
        first: dict[str, bytes] = {}
        resent = 0
        for path in order:
            _meta, offset = split_dataset(path)
            sent = path.read_bytes()[offset:]
            key = keys[path]
            if key not in first:
                first[key] = sent
                assert after_meta(original_of(store.get(key))) == sent, path.name
            elif sent != first[key]:
                tag = hashlib.sha256(sent).hexdigest()[:16]
                version = key.removesuffix(".dcm") + f"_{tag}.dcm"
                assert after_meta(original_of(store.get(version))) == sent, path.name
                resent += 1
    finally:
        gw.stop()
    assert 0 < resent < len(files) / 2
    assert len({i["sop_instance_uid"] for i in county.state.instances}) == len(first)
