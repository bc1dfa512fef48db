"""DICOMweb against a real uvicorn server, driven by ``dicomweb-client`` (PyPI), on SQLite
and PostgreSQL: search (Chinese names, %-escaped values), retrieve byte-identical, metadata
from the index, frames (native, JPEG, RLE), rendered with the file's window; another site's
clinic gets 404 everywhere and empty searches."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import generate_uid
from requests import HTTPError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.dicom_factory import make_ct, make_dx, part10_bytes
from tests.integration.test_dicomweb_support import TEST_FILES, Served, serve
from viewer_api.dicomweb import retrieve
from worklist.models import Instance

PN = "00100010"


@pytest.fixture
def served(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Served]:
    yield from serve(session_factory, tmp_path)


def _ct_series(n: int = 3, **kw: object) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    return [
        part10_bytes(make_ct(study, series_uid=series, instance_number=i + 1, **kw))  # type: ignore[arg-type]
        for i in range(n)
    ]


def _value(ds: dict, tag: str) -> object:
    return ds[tag]["Value"][0]


def _raw_get(
    served: Served, user: str, path_and_query: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A request with the URL exactly as written (%-escapes left to the server)."""
    return httpx.get(
        served.root + path_and_query,
        headers={"Authorization": f"Bearer {served.world.tokens[user]}", **(headers or {})},
        timeout=30,
    )


def _raw_parts(client: DICOMwebClient, url: str) -> list[bytes]:
    """The multipart body's parts as bytes, split by dicomweb-client's own parser."""
    response = client._session.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 200, response.text
    return list(client._decode_multipart_message(response, stream=False))


def test_search_chinese_names_and_escaped_values(served: Served) -> None:
    head = served.ingest(
        _ct_series(2, patient_name="王^小明", study_description="头颅CT平扫 急性脑卒中")
    )
    chest = served.ingest(
        [part10_bytes(make_dx(patient_name="张^丽", StudyDate="20260301", accession="A777"))]
    )
    grouped = served.ingest(
        [part10_bytes(make_ct(patient_name="Li^Si=李^四", study_description="胸部CT"))]
    )
    client = served.client("dr_li")

    found = client.search_for_studies(search_filters={"PatientName": "王*"})
    assert [_value(s, "0020000D") for s in found] == [head[0].StudyInstanceUID]
    study = found[0]
    assert study[PN]["Value"] == [{"Alphabetic": "王^小明"}]
    assert _value(study, "00081030") == "头颅CT平扫 急性脑卒中"
    assert _value(study, "00201208") == 2 and _value(study, "00201206") == 1
    assert _value(study, "00080005") == "ISO_IR 192"

    # %-escaped on the wire, exactly as the examples
    r = _raw_get(served, "dr_li", "/studies?PatientName=%E7%8E%8B*")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    assert [_value(s, "0020000D") for s in r.json()] == [head[0].StudyInstanceUID]
    r = _raw_get(served, "dr_li", "/studies?PatientName=*%5E*")
    assert len(r.json()) == 3
    r = _raw_get(served, "dr_li", "/studies?00100010=%E5%BC%A0%5E%E4%B8%BD")  # 张^丽, by tag
    assert [_value(s, "0020000D") for s in r.json()] == [chest[0].StudyInstanceUID]

    # an ideographic group matches and comes back as the Ideographic component
    li = client.search_for_studies(search_filters={"PatientName": "李*"})
    assert li[0][PN]["Value"] == [{"Alphabetic": "Li^Si", "Ideographic": "李^四"}]
    assert _value(li[0], "0020000D") == grouped[0].StudyInstanceUID
    assert len(client.search_for_studies(search_filters={"PatientName": "li^si"})) == 1

    assert len(client.search_for_studies(search_filters={"StudyDescription": "*脑卒中*"})) == 1
    assert len(client.search_for_studies(search_filters={"ModalitiesInStudy": "DX"})) == 1
    assert len(client.search_for_studies(search_filters={"AccessionNumber": "A777"})) == 1
    dated = client.search_for_studies(search_filters={"StudyDate": "20260101-20260401"})
    assert [_value(s, "0020000D") for s in dated] == [chest[0].StudyInstanceUID]
    assert client.search_for_studies(search_filters={"StudyDate": "-20251231"}) == []
    uids = f"{head[0].StudyInstanceUID},{chest[0].StudyInstanceUID}"
    assert len(client.search_for_studies(search_filters={"StudyInstanceUID": uids})) == 2
    assert len(client.search_for_studies(limit=2)) == 2
    assert len(client.search_for_studies(offset=2)) == 1
    assert client.search_for_studies(search_filters={"PatientName": "赵*"}) == []
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientID": "P001"})
    assert len(fuzzy) == 2

    # series and instances, in a study and across studies
    series = client.search_for_series(head[0].StudyInstanceUID)
    assert len(series) == 1 and _value(series[0], "00080060") == "CT"
    assert _value(series[0], "0008103E") == head[0].SeriesDescription
    all_dx = client.search_for_series(search_filters={"Modality": "DX"})
    assert [_value(s, "0020000D") for s in all_dx] == [chest[0].StudyInstanceUID]
    assert all_dx[0][PN]["Value"] == [{"Alphabetic": "张^丽"}]
    instances = client.search_for_instances(
        head[0].StudyInstanceUID, head[0].SeriesInstanceUID, fields=["all"]
    )
    assert [_value(i, "00200013") for i in instances] == [1, 2]
    assert _value(instances[0], "00280010") == head[0].Rows
    assert _value(instances[0], "00280030") is not None  # includefield=all: whole header
    one = client.search_for_instances(search_filters={"SOPInstanceUID": head[1].SOPInstanceUID})
    assert [_value(i, "00080018") for i in one] == [head[1].SOPInstanceUID]
    assert _value(one[0], "0020000D") == head[0].StudyInstanceUID
    in_study = client.search_for_instances(head[0].StudyInstanceUID)
    assert len(in_study) == 2
    with_fields = client.search_for_studies(
        search_filters={"PatientName": "王*"}, fields=["InstitutionName", "00101010"]
    )
    assert _value(with_fields[0], "00080080") == "某某镇卫生院"


def test_search_errors_are_clear(served: Served) -> None:
    served.ingest(_ct_series(1))
    for query, words in (
        ("/studies?StudyDate=2026-01", "StudyDate"),
        ("/studies?NoSuchKey=1", "Unknown query key"),
        ("/studies?limit=abc", "limit"),
        ("/studies?includefield=Nope", "includefield"),
        ("/studies/1.2.3/series?SeriesNumber=x", "SeriesNumber"),
    ):
        r = _raw_get(served, "dr_li", query)
        assert r.status_code == 400, (query, r.text)
        assert words in r.json()["detail"]
    # a real attribute the index cannot match: ignored, with a Warning header
    r = _raw_get(served, "dr_li", "/studies?ReferringPhysicianName=X*")
    assert r.status_code == 200 and "ReferringPhysicianName" in r.headers["warning"]
    assert httpx.get(served.root + "/studies").status_code == 401


def test_retrieve_is_byte_identical_and_metadata_comes_from_the_index(served: Served) -> None:
    blobs = _ct_series(3)
    datasets = served.ingest(blobs)
    st, se = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    client = served.client("nurse_ts01")

    # the client's own multipart parser, default Accept
    url = f"{served.root}/studies/{st}"
    parts = _raw_parts(client, url)
    assert parts == blobs
    url = f"{served.root}/studies/{st}/series/{se}/instances/{datasets[1].SOPInstanceUID}"
    assert _raw_parts(client, url) == [blobs[1]]
    ds = client.retrieve_instance(st, se, datasets[2].SOPInstanceUID)
    assert ds.SOPInstanceUID == datasets[2].SOPInstanceUID
    assert ds.PatientName == "王^小明"
    assert [d.SOPInstanceUID for d in client.retrieve_series(st, se)] == [
        d.SOPInstanceUID for d in datasets
    ]
    r = _raw_get(served, "dr_li", f"/studies/{st}", headers={"Accept": "text/html"})
    assert r.status_code == 406
    r = _raw_get(
        served,
        "dr_li",
        f"/studies/{st}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")

    # metadata: one entry per instance, from the announced header, pixel data by reference
    meta = client.retrieve_study_metadata(st)
    assert len(meta) == 3
    first = meta[0]
    assert first[PN]["Value"] == [{"Alphabetic": "王^小明"}]
    assert _value(first, "00081030") == "头颅CT平扫 急性脑卒中"
    assert _value(first, "00080005") == "ISO_IR 192"
    assert _value(first, "00280010") == datasets[0].Rows
    assert first["7FE00010"]["BulkDataURI"].endswith(
        f"/studies/{st}/series/{se}/instances/{datasets[0].SOPInstanceUID}/frames/1"
    )
    assert "InlineBinary" not in str(first)
    assert len(client.retrieve_series_metadata(st, se)) == 3
    one = client.retrieve_instance_metadata(st, se, datasets[1].SOPInstanceUID)
    assert _value(one, "00080018") == datasets[1].SOPInstanceUID


def test_retrieve_streams_large_bodies_and_404s_a_missing_object(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small bodies are read whole, larger ones streamed: both byte-identical, both 404
    (not a broken 200) when the stored object has gone."""
    blobs = _ct_series(2)
    datasets = served.ingest(blobs)
    st = datasets[0].StudyInstanceUID
    client = served.client("dr_li")
    url = f"{served.root}/studies/{st}"
    buffered = _raw_get(served, "dr_li", f"/studies/{st}")
    assert buffered.headers["content-length"] == str(len(buffered.content))
    monkeypatch.setattr(retrieve, "BUFFER_BYTES", 0)
    streamed = _raw_get(served, "dr_li", f"/studies/{st}")
    assert "content-length" not in streamed.headers
    assert _raw_parts(client, url) == blobs

    with served.world.factory() as session:
        keys = session.scalars(select(Instance.object_key).order_by(Instance.id)).all()
    served.world.store.delete(keys[0])
    assert _raw_get(served, "dr_li", f"/studies/{st}").status_code == 404  # streamed
    monkeypatch.setattr(retrieve, "BUFFER_BYTES", 1 << 30)
    assert _raw_get(served, "dr_li", f"/studies/{st}").status_code == 404  # buffered


def test_metadata_without_announced_header_reads_the_object(served: Served) -> None:
    datasets = served.ingest(_ct_series(1), with_json=False)
    st = datasets[0].StudyInstanceUID
    (meta,) = served.client("dr_li").retrieve_study_metadata(st)
    assert _value(meta, "00280011") == datasets[0].Columns
    assert _value(meta, "0020000D") == st


def test_frames_native_compressed_and_multiframe(served: Served) -> None:
    (ct,) = served.ingest(_ct_series(1))
    jpeg_blob = (TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    rle_blob = (TEST_FILES / "SC_rgb_rle_2frame.dcm").read_bytes()
    (jpeg,) = served.ingest([jpeg_blob])
    (rle,) = served.ingest([rle_blob])
    client = served.client("dr_li")

    def frames(ds: object, numbers: list[int], **kw: object) -> list[bytes]:
        return client.retrieve_instance_frames(
            ds.StudyInstanceUID,  # type: ignore[attr-defined]
            ds.SeriesInstanceUID,  # type: ignore[attr-defined]
            ds.SOPInstanceUID,  # type: ignore[attr-defined]
            frame_numbers=numbers,
            **kw,
        )

    # dicomweb-client's default request (Accept: multipart/related; type="*/*")
    assert frames(ct, [1]) == [ct.PixelData]
    assert frames(ct, [1], media_types=("application/octet-stream",)) == [ct.PixelData]

    stored = get_frame(jpeg.PixelData, 0, number_of_frames=1)
    assert frames(jpeg, [1]) == [stored]
    assert frames(jpeg, [1], media_types=("image/jpeg",)) == [stored]
    (native,) = frames(jpeg, [1], media_types=("application/octet-stream",))
    # decoded as the metadata says: YBR_FULL stays YBR_FULL (a client converts it)
    assert jpeg.PhotometricInterpretation == "YBR_FULL"
    assert native == pixel_array(jpeg, raw=True).tobytes() != jpeg.pixel_array.tobytes()

    pixels = rle.pixel_array
    decoded = frames(rle, [2, 1], media_types=("application/octet-stream",))
    assert decoded == [pixels[1].tobytes(), pixels[0].tobytes()]
    as_stored = frames(rle, [1, 2])
    assert as_stored == [get_frame(rle.PixelData, i, number_of_frames=2) for i in (0, 1)]

    base = f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    base += f"/instances/{ct.SOPInstanceUID}"
    assert _raw_get(served, "dr_li", base + "/frames/2").status_code == 404
    assert _raw_get(served, "dr_li", base + "/frames/0").status_code == 400
    assert _raw_get(served, "dr_li", base + "/frames/a").status_code == 400
    r = _raw_get(served, "dr_li", base + "/frames/1", headers={"Accept": "image/jp2"})
    assert r.status_code == 406


def _ct_with_known_values() -> tuple[bytes, dict[str, tuple[int, int]]]:
    """A 64x64 CT (rescale -1024, window 40/80) with three known HU regions."""
    ds = make_ct(study_description="腹部CT", body_part="ABDOMEN")
    hu = np.full((64, 64), -1000, dtype=np.int16)  # air
    hu[20:40, 0:20] = 40  # at the window centre
    hu[20:40, 40:64] = 200  # above c + w/2
    hu[0:10, 0:10] = -20  # below c - w/2 = 0
    ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 40, 80
    return part10_bytes(ds), {"centre": (30, 10), "above": (30, 50), "below": (5, 5)}


def test_rendered_applies_the_file_window(served: Served) -> None:
    blob, at = _ct_with_known_values()
    (ct,) = served.ingest([blob])
    client = served.client("dr_li")
    ids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)

    png = Image.open(BytesIO(client.retrieve_instance_rendered(*ids)))
    assert png.format == "PNG" and png.size == (64, 64)
    grey = np.asarray(png)
    assert abs(int(grey[at["centre"]]) - 128) <= 1
    assert grey[at["below"]] == 0 and grey[at["above"]] == 255

    jpg_bytes = client.retrieve_instance_rendered(
        *ids, media_types=("image/jpeg",), params={"quality": 95}
    )
    jpg = np.asarray(Image.open(BytesIO(jpg_bytes)))
    assert abs(int(jpg[30, 5]) - 128) <= 6 and jpg[30, 55] >= 245

    # the window parameter wins over the file's: -1000..1000 puts 40 HU near the middle
    wide = np.asarray(
        Image.open(BytesIO(client.retrieve_instance_rendered(*ids, params={"window": "0,2000"})))
    )
    assert 128 <= int(wide[at["centre"]]) <= 135 and 0 < int(wide[at["below"]]) < 128
    sig = np.asarray(
        Image.open(
            BytesIO(client.retrieve_instance_rendered(*ids, params={"window": "40,80,sigmoid"}))
        )
    )
    assert abs(int(sig[at["centre"]]) - 128) <= 1
    framed = client.retrieve_instance_frames_rendered(*ids, frame_numbers=[1])
    assert np.array_equal(np.asarray(Image.open(BytesIO(framed))), grey)
    small = Image.open(
        BytesIO(client.retrieve_instance_rendered(*ids, params={"viewport": "32,32"}))
    )
    assert small.size == (32, 32)

    base = "/studies/{}/series/{}/instances/{}/rendered".format(*ids)
    for query in ("?window=x,1", "?window=40,0", "?viewport=0,10", "?quality=0"):
        assert _raw_get(served, "dr_li", base + query).status_code in (400, 422), query
    assert _raw_get(served, "dr_li", base, headers={"Accept": "image/gif"}).status_code == 406


def test_other_site_clinic_gets_404_and_empty_searches(served: Served) -> None:
    (ct,) = served.ingest(_ct_series(1))
    st, se, sop = ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    own, other = served.client("nurse_ts01"), served.client("nurse_ts02")
    assert len(own.search_for_studies()) == 1
    assert len(own.retrieve_study_metadata(st)) == 1

    assert other.search_for_studies() == []
    assert other.search_for_series() == []
    assert other.search_for_series(st) == []
    assert other.search_for_instances() == []
    assert other.search_for_instances(st) == []
    assert other.search_for_instances(st, se) == []
    inst = f"/studies/{st}/series/{se}/instances/{sop}"
    for path in (
        f"/studies/{st}",
        f"/studies/{st}/series/{se}",
        inst,
        f"/studies/{st}/metadata",
        f"/studies/{st}/series/{se}/metadata",
        inst + "/metadata",
        inst + "/frames/1",
        inst + "/rendered",
        inst + "/frames/1/rendered",
    ):
        r = _raw_get(served, "nurse_ts02", path)
        assert r.status_code == 404, (path, r.status_code)
        assert _raw_get(served, "gw_ts01", path).status_code == 403, path
    with pytest.raises(HTTPError) as err:
        other.retrieve_instance(st, se, sop)
    assert err.value.response.status_code == 404


def test_every_view_of_patient_data_is_audited(served: Served) -> None:
    """A clinic user's searches (what was asked, how many matched), metadata reads and
    image views leave audit rows, the images one row per study however many frames; another
    site's attempts are audited as refused."""
    series = served.ingest(_ct_series(3, patient_name="王^小明"))
    st, se = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    nurse, other = served.client("nurse_ts01"), served.client("nurse_ts02")
    assert len(nurse.search_for_studies(search_filters={"PatientName": "王*"})) == 1
    assert len(nurse.search_for_instances(st, se)) == 3
    nurse.retrieve_study_metadata(st)
    for ds in series:
        for _ in range(2):
            nurse.retrieve_instance_rendered(st, se, ds.SOPInstanceUID)
        nurse.retrieve_instance_frames(st, se, ds.SOPInstanceUID, frame_numbers=[1])
    with pytest.raises(HTTPError):
        other.retrieve_study_metadata(st)

    searches = served.audited("dicomweb_searched")
    asked = [(e.username, e.object_id, e.detail["level"], e.detail["results"]) for e in searches]
    assert asked == [("nurse_ts01", "", "studies", 1), ("nurse_ts01", st, "instances", 3)]
    assert ["PatientName", "王*"] in searches[0].detail["query"]
    (metadata,) = served.audited("dicomweb_metadata_viewed")
    assert (metadata.username, metadata.site_code, metadata.object_id) == ("nurse_ts01", "TS01", st)
    (images,) = served.audited("dicomweb_images_viewed")  # 9 frames asked for: one row
    assert (images.username, images.object_type, images.object_id) == ("nurse_ts01", "study", st)
    (refused,) = served.audited("study_access_refused")
    assert (refused.username, refused.object_id, refused.outcome) == ("nurse_ts02", st, "refused")


def test_unreadable_stored_object_is_a_clear_error_not_a_crash(served: Served) -> None:
    (ct,) = served.ingest(_ct_series(1))
    from storage.keys import instance_key

    key = instance_key("TS01", ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    served.world.store.put(key, b"not a DICOM file at all")
    base = f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    base += f"/instances/{ct.SOPInstanceUID}"
    for path in (base + "/frames/1", base + "/rendered"):
        r = _raw_get(served, "dr_li", path)
        assert r.status_code == 422, (path, r.status_code)
        assert "cannot be read" in r.json()["detail"]
    assert _raw_get(served, "dr_li", base + "/metadata").status_code == 200  # from the index
