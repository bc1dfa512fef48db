"""Hostile input against the county API: schemathesis generates requests from the app's own
OpenAPI schema (valid ones and schema-violating ones), sends them as each role, and every
answer must be a client error or a success, never a server error; successful JSON answers
must match their response schema.

The engine (``fuzz_api``) is shared with ``fuzz/api.py``, which runs many more examples and
prints a summary. Each operation's requests are drawn once per mode and sent as every role.
Here the budget is small (deterministic, about half a minute on SQLite); the PostgreSQL run
is smaller still, but finds what SQLite forgives (NUL in text, 32-bit integer overflow).
Hand-written cases cover what the schema cannot describe: QIDO query keys, the ``window`` /
``viewport`` / ``quality`` parameters of rendered images, bodies that are not JSON objects,
and request size limits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydicom import dcmread
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.orm import Session, sessionmaker

from gateway.instance import read_instance
from tests.dicom_factory import make_ct, part10_bytes
from tests.integration.test_api_world import Study, World, build_world
from viewer_api.routes.events import stop_streams

ROLES = {
    "admin": "boss",
    "radiologist": "dr_li",
    "clinic": "nurse_ts01",
    "gateway": "gw_ts01",
}
MODES = {"positive": GenerationMode.POSITIVE, "negative": GenerationMode.NEGATIVE}
# after this many "not for your role" answers in a row, the role has seen enough of a route
FORBIDDEN_STREAK = 2


@dataclass(frozen=True)
class Known:
    """A real study in the world, so generated requests sometimes reach deep code."""

    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass
class Finding:
    operation: str
    role: str
    mode: str
    kind: str  # "server error", "crash", or a failed check's title
    detail: str
    request: str
    count: int = 1


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # DataError caught by the last line
    unsatisfiable: set[tuple[str, str]] = field(default_factory=set)  # (operation, mode)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (operation, role)

    def add(self, finding: Finding) -> None:
        key = (finding.operation, finding.kind, finding.detail)
        if key in self.findings:
            self.findings[key].count += 1
        else:
            self.findings[key] = finding

    def summary(self) -> str:
        lines = [
            f"{self.cases} requests over {len(self.by_operation)} operations; statuses: "
            + ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())),
            f"{len(self.findings)} distinct failures",
        ]
        per_route = Counter(f.operation for f in self.findings.values())
        for operation, n in per_route.most_common():
            lines.append(f"  {n:3d}  {operation}")
        for f in self.findings.values():
            lines.append(
                f"- {f.operation} [{f.role}, {f.mode}] x{f.count}: {f.kind}: {f.detail}\n"
                f"    {f.request}"
            )
        return "\n".join(lines)


class _RefusedValues(logging.Handler):
    """Collects the app's "database refused a value" warnings: the request got a 422 from
    the last line of defence, but validation should have caught it first."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", "") == "request_value_refused":
            self.sink.append(record.getMessage())


def seed(world: World, tmp: Path) -> list[Known]:
    """One real two-slice CT study per site, announced as the gateway does (with pixels, so
    rendered and frame routes decode), and a draft report on the first."""
    known = []
    for site, gateway in (("TS01", "gw_ts01"), ("TS02", "gw_all")):
        study_uid = series_uid = ""
        items = []
        for number in (1, 2):
            ds = make_ct(study_uid or None, series_uid=series_uid or None, instance_number=number)
            study_uid, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
            blob = part10_bytes(ds)
            received = read_instance(
                blob,
                dcmread(BytesIO(blob)).file_meta,
                site=site,
                calling_ae=f"CT_{site}",
                called_ae="TELEREAD",
                urgent_called_aes={},
            )
            digest = hashlib.sha256(blob).hexdigest()
            world.store.put(received.object_key, blob, sha256=digest)
            item = dict(received.payload)
            item.update(size=len(blob), sha256=digest, received_at=world.clock.now.isoformat())
            items.append(item)
            known.append(Known(study_uid, series_uid, ds.SOPInstanceUID))
        r = world.post(
            gateway,
            "/api/v1/ingest/instances",
            json={"site": site, "calling_ae": f"CT_{site}", "instances": items},
        )
        assert r.status_code == 200, r.text
    world.clock.tick(120)  # past the stable age: the studies are ready to read
    first = known[0].study_uid
    assert world.post("dr_li", f"/api/v1/worklist/{first}/claim").status_code == 200
    r = world.put("dr_li", f"/api/v1/studies/{first}/report", json={"findings": "正常"})
    assert r.status_code == 200, r.text
    return known


def load_schema(world: World) -> Any:
    raw = world.client.get("/openapi.json").json()
    return schemathesis.openapi.from_dict(raw)


def _to_httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """requests-style keyword arguments (schemathesis' serialisation) -> httpx's."""
    out = {k: kwargs[k] for k in ("method", "url", "headers", "params") if kwargs.get(k)}
    out["url"] = kwargs["url"]
    if kwargs.get("cookies"):
        out["cookies"] = kwargs["cookies"]
    if "json" in kwargs:
        out["content"] = json.dumps(kwargs["json"]).encode()
    elif "data" in kwargs:
        data = kwargs["data"]
        if isinstance(data, dict):
            out["data"] = data
        elif isinstance(data, str):
            out["content"] = data.encode("utf-8", "surrogatepass")
        elif data is not None:
            out["content"] = data
    if kwargs.get("files"):
        out["files"] = kwargs["files"]
    return out


def _where(exc: BaseException) -> str:
    """The innermost frame of our own code the exception passed through."""
    ours = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if any(p in f.filename for p in ("/viewer_api/", "/worklist/", "/storage/"))
    ]
    frame = ours[-1] if ours else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"


def _short(method: str, url: str, kwargs: dict[str, Any]) -> str:
    body = kwargs.get("content") or kwargs.get("data") or kwargs.get("files") or ""
    text = repr(body)
    return f"{method} {url} params={kwargs.get('params') or {}} body={text[:300]}"


def _known_paths(case: Any, known: Known) -> None:
    mapping = {"study_uid": known.study_uid, "series_uid": known.series_uid}
    mapping["sop_uid"] = known.sop_uid
    for name, value in mapping.items():
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = value


def generate_cases(
    operation: Any, *, mode: str, examples: int, known: list[Known], derandomize: bool = True
) -> list[Any] | None:
    """``examples`` generated requests to ``operation`` (about half of them naming a real
    study), or None when the mode has nothing to generate (no negative case for an operation
    with no parameters and no body). They depend on neither the role nor the answers, so
    they are drawn once and sent as every role: drawing them is most of the fuzzing's cost."""
    cases: list[Any] = []

    @settings(
        max_examples=examples,
        derandomize=derandomize,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(case=operation.as_strategy(generation_mode=MODES[mode]), pick=st.integers(0, 3))
    def collect(case: Any, pick: int) -> None:
        if pick < len(known):
            _known_paths(case, known[pick])
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:
        return None
    return cases


def fuzz_operation(
    world: World,
    operation: Any,
    cases: list[Any],
    *,
    role: str,
    mode: str,
    report: FuzzReport,
    schema_checks: bool = True,
) -> None:
    """Send ``cases`` (from ``generate_cases``) to ``operation`` as ``role``; findings into
    ``report``. A role the route refuses (``FORBIDDEN_STREAK`` refusals in a row) is done."""
    label = f"{operation.method.upper()} {operation.path}"
    if (label, role) in report.forbidden:
        return
    headers = world.headers(ROLES[role])
    forbidden = 0
    checks = [response_schema_conformance] if schema_checks else []
    for case in cases:
        kwargs = _to_httpx(case.as_transport_kwargs(base_url="http://testserver"))
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **headers}
        method, url = kwargs.pop("method"), kwargs.pop("url")
        report.cases += 1
        report.by_operation[label] += 1
        try:
            response = world.client.request(method, url, **kwargs)
        except Exception as exc:
            report.add(
                Finding(
                    label,
                    role,
                    mode,
                    "crash",
                    f"{type(exc).__name__} at {_where(exc)}: {str(exc)[:200]}",
                    _short(method, url, kwargs),
                )
            )
            continue
        report.statuses[response.status_code] += 1
        if report.refused:
            report.add(
                Finding(
                    label,
                    role,
                    mode,
                    "database refused a value",
                    report.refused[-1],
                    _short(method, url, kwargs),
                )
            )
            report.refused.clear()
        if response.status_code >= 500:
            report.add(
                Finding(
                    label,
                    role,
                    mode,
                    "server error",
                    f"{response.status_code} {response.text[:200]}",
                    _short(method, url, kwargs),
                )
            )
            continue
        if response.status_code == 403 and "role" in response.text:
            forbidden += 1
            if forbidden >= FORBIDDEN_STREAK:
                report.forbidden.add((label, role))
                return
        else:
            forbidden = 0
        if not checks or not 200 <= response.status_code < 300:
            continue
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                report.add(
                    Finding(
                        label,
                        role,
                        mode,
                        failure.title,
                        str(getattr(failure, "message", ""))[:200],
                        _short(method, url, kwargs),
                    )
                )


def fuzz_api(
    world: World,
    *,
    known: list[Known],
    examples: int,
    roles: tuple[str, ...] = tuple(ROLES),
    modes: tuple[str, ...] = tuple(MODES),
    derandomize: bool = True,
    only: Callable[[str], bool] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Every operation of the schema, as every role, in every mode."""
    stop_streams(world.client.app)  # the SSE stream answers at once instead of streaming
    schema = load_schema(world)
    report = FuzzReport()
    handler = _RefusedValues(report.refused)
    app_logger = logging.getLogger("viewer_api.main")
    app_logger.addHandler(handler)
    try:
        _fuzz_all(world, schema, report, known, examples, roles, modes, derandomize, only, progress)
    finally:
        app_logger.removeHandler(handler)
    return report


def _fuzz_all(
    world: World,
    schema: Any,
    report: FuzzReport,
    known: list[Known],
    examples: int,
    roles: tuple[str, ...],
    modes: tuple[str, ...],
    derandomize: bool,
    only: Callable[[str], bool] | None,
    progress: Callable[[str], None] | None,
) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if only is not None and not only(label):
            continue
        cases = {
            mode: generate_cases(
                operation, mode=mode, examples=examples, known=known, derandomize=derandomize
            )
            for mode in modes
        }
        for role in roles:
            for mode in modes:
                generated = cases[mode]
                if generated is None:
                    report.unsatisfiable.add((label, mode))
                    continue
                fuzz_operation(world, operation, generated, role=role, mode=mode, report=report)
        if progress is not None:
            progress(f"{label}: {report.by_operation[label]} requests, {len(report.findings)}")


# --- tests --------------------------------------------------------------------------------
@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def test_schemathesis_finds_no_server_error(world: World, tmp_path: Path) -> None:
    """Every operation, both modes: on SQLite as every role; on PostgreSQL (slower, but
    strict about NUL and integer ranges) as the admin, who reaches most routes, and the
    gateway, who reaches ingest. ``fuzz/api.py`` runs the same with a larger budget."""
    known = seed(world, tmp_path)
    if world.factory.kw["bind"].dialect.name == "postgresql":
        report = fuzz_api(world, known=known, examples=2, roles=("admin", "gateway"))
    else:
        report = fuzz_api(world, known=known, examples=3)
    assert report.cases > 200, report.summary()
    assert not report.findings, report.summary()


# --- what the schema cannot describe ------------------------------------------------------
NASTY = [
    "\x00",
    "a\x00b",
    "%00",
    "9" * 40,
    "-1",
    "1e309",
    "nan",
    "x" * 5000,
    "*",
    "?",
    "\\",
    "%",
    "_",
    "'; DROP TABLE studies; --",
    "王^小明",
    "\ufffd",
    "20260101-",
    "-",
    "2026-01-01",
    "1,2,,3",
    "..",
    "../../etc/passwd",
    "1.2.840.10008.1.2.1",
]
QIDO_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "00100010",
    "00200011",
    "limit",
    "offset",
    "includefield",
    "fuzzymatching",
    "Modality",
    "NoSuchKeyword",
    "0010001",
    "",
]


def _assert_client_error_or_success(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


def test_qido_query_keys_and_values(world: World, tmp_path: Path) -> None:
    """Every QIDO key with every nasty value, at each level: never a server error."""
    known = seed(world, tmp_path)
    paths = [
        "/dicomweb/studies",
        "/dicomweb/series",
        "/dicomweb/instances",
        f"/dicomweb/studies/{known[0].study_uid}/instances",
    ]
    rng = random.Random(7)
    for key in QIDO_KEYS:
        for value in NASTY:
            path = rng.choice(paths)
            try:
                r = world.client.get(path, params={key: value}, headers=world.headers("dr_li"))
            except Exception as exc:  # the app raised: report the request
                raise AssertionError(f"{path}?{key}={value!r}: {exc!r}") from exc
            _assert_client_error_or_success(r, f"{path}?{key}={value!r}")
        # bytes that are not UTF-8 (a surrogate, a lone continuation byte), as sent raw
        for raw in (b"%ED%A0%80", b"%FF%FE", b"%C0%80", b"%00"):
            url = httpx.URL(paths[0], query=key.encode() + b"=" + raw)
            r = world.client.get(url, headers=world.headers("dr_li"))
            _assert_client_error_or_success(r, f"{key}={raw!r}")


def test_rendered_parameters(world: World, tmp_path: Path) -> None:
    known = seed(world, tmp_path)
    k = known[0]
    base = f"/dicomweb/studies/{k.study_uid}/series/{k.series_uid}/instances/{k.sop_uid}"
    for suffix in ("/rendered", "/frames/1/rendered"):
        for name in ("window", "viewport", "quality"):
            for value in [*NASTY, "40,400", "40,400,LINEAR", "0,0", "1,1e308", "64,0", "1,-1"]:
                r = world.client.get(
                    base + suffix, params={name: value}, headers=world.headers("dr_li")
                )
                _assert_client_error_or_success(r, f"{suffix}?{name}={value!r}")
    for frames in ("0", "-1", "99999999999999999999", "1,,2", "a", "1" * 5000, "3"):
        r = world.client.get(f"{base}/frames/{frames}", headers=world.headers("dr_li"))
        _assert_client_error_or_success(r, f"frames/{frames}")
        assert r.status_code in (400, 404, 406, 422), (frames, r.status_code)


BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"[1,2]",
    b'"text"',
    b"42",
    b"{",
    b'{"a": 1e999999}',
    b"\xff\xfe",
    b"[" * 5000 + b"]" * 5000,
    b'{"findings": "a\\u0000b"}',
    b'{"findings": "\\ud800"}',
]


def test_json_bodies_that_are_not_objects(world: World, tmp_path: Path) -> None:
    known = seed(world, tmp_path)
    study = known[0].study_uid
    targets = [
        ("dr_li", "PUT", f"/api/v1/studies/{study}/report"),
        ("dr_li", "POST", f"/api/v1/studies/{study}/report/sign"),
        ("dr_li", "POST", f"/api/v1/studies/{study}/report/addenda"),
        ("dr_li", "POST", f"/api/v1/studies/{study}/report/critical-results"),
        ("boss", "POST", f"/api/v1/worklist/{study}/assign"),
        ("boss", "POST", f"/api/v1/studies/{study}/flag"),
        ("gw_ts01", "POST", "/api/v1/ingest/instances"),
        ("gw_ts01", "POST", "/api/v1/ingest/study-complete"),
    ]
    for user, method, path in targets:
        for body in BODIES:
            r = world.client.request(
                method,
                path,
                content=body,
                headers={**world.headers(user), "Content-Type": "application/json"},
            )
            _assert_client_error_or_success(r, f"{method} {path} {body[:40]!r}")
            assert r.status_code in (400, 404, 409, 413, 422), (path, body[:40], r.text)


def test_token_form_with_hostile_fields(world: World) -> None:
    for username, password in [
        ("a\x00b", "x"),
        ("x" * 10_000, "y"),
        ("dr_li", "p" * 100_000),
        ("", ""),
        ("\ufffd\u202e", "x"),
    ]:
        r = world.client.post(
            "/api/v1/auth/token",
            data={"username": username, "password": password},
        )
        _assert_client_error_or_success(r, f"token {username[:20]!r}")
        assert r.status_code in (400, 401, 413, 422, 429), r.text


# --- request size limits (the gate itself: tests/unit/test_request_gate.py) -------------
def test_api_refuses_oversize_bodies(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    for world in build_world(session_factory, tmp_path, max_request_bytes=64 * 1024):
        big = b"{" + b" " * (200 * 1024) + b"}"
        r = world.client.post(
            "/api/v1/ingest/instances",
            content=big,
            headers={**world.headers("gw_ts01"), "Content-Type": "application/json"},
        )
        assert r.status_code == 413, r.text

        def stream() -> Iterator[bytes]:
            for _ in range(100):
                yield b" " * 4096

        r = world.client.post(
            "/api/v1/ingest/instances",
            content=stream(),
            headers={**world.headers("gw_ts01"), "Content-Type": "application/json"},
        )
        assert r.status_code == 413, r.text
        r = world.client.post(
            "/api/v1/auth/token",
            content=b"username=a&password=" + b"b" * (100 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413, r.text


# --- what the fuzzing found, pinned -------------------------------------------------------
def test_what_fuzzing_found(world: World, tmp_path: Path) -> None:
    """Each was a 500 (an exception in the app) before validation caught it."""
    k = seed(world, tmp_path)[0]
    big = str(2**63)
    cases = [
        ("dr_li", "GET", f"/api/v1/worklist?offset={big}", None, 422),
        ("dr_li", "GET", f"/api/v1/reports?offset={big}", None, 422),
        ("dr_li", "GET", f"/api/v1/events/recent?after={2**64}", None, 422),
        ("boss", "GET", f"/api/v1/audit?offset={2**70}", None, 422),
        ("dr_li", "GET", f"/dicomweb/series?SeriesNumber={big}", None, 400),
        ("dr_li", "GET", f"/dicomweb/instances?InstanceNumber={big}", None, 400),
        ("dr_li", "GET", "/api/v1/studies/1.2%003", None, 400),
        ("dr_li", "GET", "/api/v1/worklist?site=TS%0001", None, 400),
        ("dr_li", "GET", "/api/v1/studies/not-a-uid", None, 422),
        ("dr_li", "GET", "/dicomweb/studies/" + "1." * 40 + "1", None, 422),
        ("dr_li", "PUT", f"/api/v1/studies/{k.study_uid}/report", b'{"findings":"a\\u0000"}', 422),
        ("dr_li", "PUT", f"/api/v1/studies/{k.study_uid}/report", b'{"findings":"\\ud800"}', 422),
        ("dr_li", "PUT", f"/api/v1/studies/{k.study_uid}/report", b'{"x": 1e999}', 422),
    ]
    base = f"/dicomweb/studies/{k.study_uid}/series/{k.series_uid}/instances/{k.sop_uid}"
    cases += [
        ("dr_li", "GET", f"{base}/rendered?window=1e300,1e300", None, 400),
        ("dr_li", "GET", f"{base}/frames/{'1' * 5000}", None, 400),
    ]
    for when in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"):
        result = {
            "finding": "出血",
            "identified_at": when,
            "communicated_to_name": "王医生",
            "communicated_at": when,
            "method": "phone",
            "read_back_confirmed": True,
        }
        url = f"/api/v1/studies/{k.study_uid}/report/critical-results"
        cases.append(("dr_li", "POST", url, json.dumps(result).encode(), 422))
    for user, method, url, body, expected in cases:
        headers = {**world.headers(user), "Content-Type": "application/json"}
        r = world.client.request(method, url, content=body, headers=headers)
        assert r.status_code == expected, (url, body, r.status_code, r.text[:200])
        assert "detail" in r.json()


def test_ingest_values_the_database_cannot_hold(world: World) -> None:
    study = Study(site="TS01", modality="CT", description="头颅")
    payload = world.payload(study)
    bad_values: list[tuple[str, Any]] = [
        ("series_number", 2**31),
        ("instance_number", -(2**31) - 1),
        ("size", 2**63),
        ("patient_name", "王\x00三"),
        ("study_description", "\ud800"),
        ("text_fields", {"StudyDescription": "a\x00"}),
        ("dicom_json", {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "\x00"}]}}),
        ("dicom_json", {"x": float("inf")}),
        ("received_at", "9999-12-31T23:59:59-23:59"),  # no UTC equivalent: OverflowError
        ("received_at", "0001-01-01T00:00:00+14:00"),
    ]
    for name, value in bad_values:
        item = dict(payload["instances"][0], **{name: value})
        body = json.dumps({**payload, "instances": [item]}).encode()
        r = world.client.post(
            "/api/v1/ingest/instances",
            content=body,
            headers={**world.headers("gw_ts01"), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
    assert world.announce(study).status_code == 200  # the same instances, well formed
