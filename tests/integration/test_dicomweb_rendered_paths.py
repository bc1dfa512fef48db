"""Rendered through a real server, both ways: an instance announced with its header (the
native path reads the frame from the object's tail) and the same pixels announced without
one, or with the native path switched off (the pydicom path), give byte-identical PNG and
JPEG; compressed instances still render."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_dicomweb_support import Served, serve


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _twins(ds: Dataset) -> tuple[bytes, bytes]:
    """``ds`` twice: the same pixels and header, another study, series and instance."""
    first = part10_bytes(ds)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return first, part10_bytes(ds)


def _multi_frame() -> Dataset:
    ds = make_ct()
    frames = np.random.default_rng(3).integers(0, 2000, (3, 64, 64)).astype(np.int16)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    return ds


def test_fast_and_parsed_paths_give_the_same_images(served: Served) -> None:
    client = served.client("dr_li")
    for ds in (make_ct(), make_dx(PhotometricInterpretation="MONOCHROME1"), _multi_frame()):
        fast_blob, parsed_blob = _twins(ds)
        (fast,) = served.ingest([fast_blob])
        (parsed,) = served.ingest([parsed_blob], with_json=False)
        frames = int(ds.get("NumberOfFrames", 1))
        for params in ({}, {"window": "40,400"}, {"window": "100,50,sigmoid"}):
            for media in ("image/png", "image/jpeg"):
                images = [
                    client.retrieve_instance_frames_rendered(
                        i.StudyInstanceUID,
                        i.SeriesInstanceUID,
                        i.SOPInstanceUID,
                        frame_numbers=[frames],
                        media_types=(media,),
                        params=params,
                    )
                    for i in (fast, parsed)
                ]
                assert images[0] == images[1], (ds.Modality, params, media)


def test_compressed_instances_render_through_pydicom(served: Served) -> None:
    plain, compressed = make_ct(), make_ct()
    compressed.compress(RLELossless)
    (a,) = served.ingest([part10_bytes(plain)])
    (b,) = served.ingest([part10_bytes(compressed)])
    client = served.client("dr_li")
    images = [
        client.retrieve_instance_rendered(i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID)
        for i in (a, b)
    ]
    assert images[0] == images[1]  # lossless: the same pixels, the same PNG


def test_the_native_switch_falls_back_to_pydicom(served: Served) -> None:
    """``native_frames`` off: the same instance, announced with its header, rendered through
    pydicom gives the same image; the routes answer every caller as the other routes do."""
    (ct,) = served.ingest([part10_bytes(make_ct())])
    ids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    path = "/dicomweb/studies/{}/series/{}/instances/{}".format(*ids)
    world = served.world
    png = {**world.headers("dr_li"), "Accept": "image/png"}
    state = world.client.app.state  # type: ignore[attr-defined]
    native = world.client.get(path + "/rendered", headers=png)
    assert native.status_code == 200
    state.dicomweb_frames = None  # made again on first use, with the switch off
    state.settings = state.settings.model_copy(update={"native_frames": False})
    for suffix in ("/rendered", "/frames/1/rendered"):
        r = world.client.get(path + suffix, headers=png)
        assert r.status_code == 200 and r.content == native.content
        assert world.get("nurse_ts02", path + suffix).status_code == 404
        assert world.get("gw_ts01", path + suffix).status_code == 403
        assert world.get(None, path + suffix).status_code == 401
    assert not state.dicomweb_frames.native_frames
    assert world.get("dr_li", path + "/rendered?quality=abc").status_code == 422
    assert world.get("dr_li", path + "/frames/1,2/rendered").status_code == 400
