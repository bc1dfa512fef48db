"""Every storage file among pydicom's test data, sent by dcmtk's storescu in its own transfer
syntax to the real `teleread serve`, is either stored byte-identical and rendered by
/rendered like an independent decode of the file sent (pydicom and its decoders: the same
pixels for lossless syntaxes, within a tolerance for lossy ones), or refused with a failure
status and an Error Comment naming the reason. Each file's outcome is printed."""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, _config

from gateway.scp import STORAGE_SOP_CLASSES
from tests.acceptance.conftest import Pipeline
from tests.acceptance.test_end_to_end import dataset_bytes, wait_for
from viewer_api.dicomweb.display import to_display

pytestmark = pytest.mark.dcmtk

# storescu's option proposing each transfer syntax (with -R: only the contexts needed)
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
# files no decoder installed here decodes (pydicom with pylibjpeg, pyjpegls, openjpeg,
# Pillow; python-gdcm declines them too), stored as sent and answered 406 by /rendered
UNDECODABLE = {
    "JPEG-lossy.dcm": "invalid SOS parameters for a sequential JPEG (dcmtk decodes it anyway)",
    "JPEG2000-embedded-sequence-delimiter.dcm": "its J2K codestream header is not readable",
}
SUCCESS = "0x0000: Success"
TRAILING_PADDING = 0xFFFCFFFC


@dataclass
class Sent:
    path: Path
    name: str
    sop_class: str
    transfer_syntax: str
    status: str = ""
    comment: str = ""
    outcome: str = ""
    sender: str = "storescu"


def storage_files(tmp: Path) -> list[Sent]:
    """Each Part-10 file of a storage SOP class in a syntax storescu can propose; a file
    whose SOP Instance UID an earlier file has is copied under a fresh one, so it is stored
    too (the copy is what is sent and compared)."""
    files: list[Sent] = []
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(get_testdata_files(), key=lambda n: Path(n).name):
            path = Path(name)
            try:
                header = dcmread(path, stop_before_pixels=True)
                meta = header.file_meta
                sop_class = str(meta.MediaStorageSOPClassUID)
                ts = str(meta.TransferSyntaxUID)
                sops = {str(meta.MediaStorageSOPInstanceUID), str(header.get("SOPInstanceUID"))}
            except Exception:
                continue  # not a Part-10 file
            if sop_class not in STORAGE_SOP_CLASSES or ts not in PROPOSE:
                continue
            if sops & seen:
                ds = dcmread(path)
                fresh = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = fresh
                if "SOPInstanceUID" in ds:
                    ds.SOPInstanceUID = fresh
                path = tmp / f"copy-{path.name}"
                ds.save_as(path, enforce_file_format=False)
                sops = {fresh}
            seen |= sops
            files.append(Sent(path, Path(name).name, sop_class, ts))
    return files


_STATUS = re.compile(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4}.*)")
_COMMENT = re.compile(r"\(0000,0902\) LO \[(.*)\]")


def send(pipeline: Pipeline, files: list[Sent]) -> None:
    """storescu, one run per transfer syntax; each file's status and Error Comment."""
    groups: dict[str, list[Sent]] = defaultdict(list)
    for sent in files:
        groups[sent.transfer_syntax].append(sent)
    for ts, group in groups.items():
        run = subprocess.run(
            [
                *("storescu", "-d", "-nh", "-R", PROPOSE[ts]),
                *("-aet", "CT_TS01", "-aec", "TELEREAD", "127.0.0.1", str(pipeline.dicom_port)),
                *(str(s.path) for s in group),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        by_path = {str(s.path): s for s in group}
        current: Sent | None = None
        responded = False
        for line in (run.stdout + run.stderr).splitlines():
            if line.startswith("I: Sending file: "):
                current = by_path[line.removeprefix("I: Sending file: ")]
            elif line.startswith("I: Received Store Response"):
                responded = True
            elif current is not None and responded and (m := _STATUS.search(line)):
                current.status, responded = m.group(1), False
            elif current is not None and (m := _COMMENT.search(line)):
                current.comment = m.group(1)
        for s in group:
            if not s.status:
                s.status = "no response"


def stored_as_sent(part10: bytes, sent: Sent) -> bool:
    """Byte-identical for a file sent as is (pynetdicom); storescu re-encodes what it
    reads, so for it: the same elements and values."""
    if dataset_bytes(part10) == dataset_bytes(sent.path.read_bytes()):
        return True
    if sent.sender != "storescu":
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored, original = dcmread(BytesIO(part10)), dcmread(sent.path)
    return values(stored) == values(original)


def values(ds: Dataset) -> dict[int, object]:
    """Each element's value, without what storescu recomputes (group lengths, an encapsulated
    Pixel Data's VR: OB) or drops (trailing padding)."""
    return {e.tag: e.value for e in ds if e.tag.element != 0 and e.tag != TRAILING_PADDING}


def send_as_is(pipeline: Pipeline, files: list[Sent]) -> None:
    """pynetdicom for the files storescu cannot read: the bytes as they are."""
    ae = AE(ae_title="CT_TS01")
    for s in files:
        ae.add_requested_context(s.sop_class, [s.transfer_syntax])
    assoc = ae.associate("127.0.0.1", pipeline.dicom_port, ae_title="TELEREAD")
    assert assoc.is_established
    try:
        for s in files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rsp = assoc.send_c_store(s.path)
            s.sender = "pynetdicom"
            s.status = f"0x{int(rsp.Status):04x}" + (": Success" if int(rsp.Status) == 0 else "")
            s.comment = str(rsp.get("ErrorComment", ""))
    finally:
        assoc.release()


def reference(path: Path) -> tuple[np.ndarray | None, Dataset]:
    """Frame 1 as pydicom decodes the file sent, made fit for a screen; None: no pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
        if "PixelData" not in ds:
            return None, ds
        return to_display(pixel_array(ds, index=0), ds, None), ds


def check_stored_and_rendered(pipeline: Pipeline, files: list[Sent]) -> None:
    client = pipeline.client("dr_li")

    def arrived(url: str) -> httpx.Response | None:  # uploaded and announced by the gateway
        r = client.get(url)
        return r if r.status_code == 200 else None

    for s in files:
        if s.status != SUCCESS:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(s.path, stop_before_pixels=True)
        study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        url = f"/api/v1/studies/{study}/instances/{sop}"
        stored = wait_for(lambda url=url: arrived(url), timeout=120)
        if not stored_as_sent(stored.content, s):
            s.outcome = "stored dataset differs from the file sent"
            continue
        rendered = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered")
        try:
            expected, full = reference(s.path)
        except Exception as exc:  # the file itself: no decoder installed here decodes it
            s.outcome = f"stored, undecodable file ({rendered.status_code}): {exc!s:.50}"
            continue
        if expected is None:
            no_pixels = rendered.status_code == 406
            s.outcome = "stored, no pixel data" if no_pixels else f"render {rendered.status_code}"
            continue
        if rendered.status_code != 200:
            s.outcome = f"render fails: {rendered.status_code} {rendered.text[:120]}"
            continue
        got = np.asarray(Image.open(BytesIO(rendered.content)))
        if got.shape != expected.shape:
            s.outcome = f"render fails: shape {got.shape} != {expected.shape}"
            continue
        diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        lossy = UID(s.transfer_syntax) in LOSSY or str(full.get("LossyImageCompression")) == "01"
        if (diff.mean() > 2.0 or diff.max() > 64) if lossy else diff.max() > 0:
            s.outcome = f"render fails: differs (max {diff.max()}, mean {diff.mean():.2f})"
            continue
        s.outcome = "stored, rendered" + (" (lossy)" if lossy else "")


LOSSY = {
    UID("1.2.840.10008.1.2.4.50"),
    UID("1.2.840.10008.1.2.4.51"),
    UID("1.2.840.10008.1.2.4.81"),
    UID("1.2.840.10008.1.2.4.91"),
}


def test_every_testdata_file_is_stored_and_rendered_or_refused_with_a_reason(
    shared_pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = storage_files(tmp_path)
    assert len(files) > 140
    send(shared_pipeline, files)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the bytes as they are
    send_as_is(shared_pipeline, [s for s in files if s.status == "no response"])
    for s in files:
        if s.status != SUCCESS:
            s.outcome = f"refused: {s.status}: {s.comment or 'NO ERROR COMMENT'}"
    check_stored_and_rendered(shared_pipeline, files)
    for s in files:
        print(f"{s.name:44} {s.transfer_syntax:24} {s.sender:10} {s.outcome}")
    kinds = Counter(s.outcome.split(":")[0].split(" (")[0] for s in files)
    print(f"{len(files)} files: " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
    assert [s.name for s in files if s.status != SUCCESS and not s.comment] == []
    undecodable = {s.name for s in files if s.outcome.startswith("stored, undecodable file")}
    assert undecodable == set(UNDECODABLE)
    assert all("(406)" in s.outcome for s in files if s.name in undecodable)
    render_fails = [
        (s.name, s.outcome)
        for s in files
        if s.status == SUCCESS
        and s.name not in undecodable
        and not s.outcome.startswith(("stored, rendered", "stored, no pixel data"))
    ]
    assert render_fails == []
