"""WADO-RS rendered (PS3.18 8.3.5.1.3): a frame as PNG or JPEG for a screen.

Values pass the modality LUT (RescaleSlope / RescaleIntercept), then a VOI window: the
``window=center,width[,linear|linear-exact|sigmoid]`` parameter, else the file's own first
WindowCenter / WindowWidth, else a modality default (CT: brain 40/80 for a head, soft tissue
40/400 otherwise). Only an image with none of these is stretched min..max. MONOCHROME1 is
inverted so that it looks like MONOCHROME2. ``viewport=w,h`` fits the image into w x h.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from PIL import Image
from sqlalchemy.orm import Session
from starlette.routing import Route

from viewer_api.deps import SessionDep, ViewerUser
from viewer_api.dicomweb import fast
from viewer_api.dicomweb.access import bad_request, find_instance, not_acceptable, unreadable
from viewer_api.dicomweb.multipart import parse_accept
from viewer_api.dicomweb.pixels import Attributes, Frames, PixelError, StoredInstance
from viewer_api.dicomweb.wado import frames_of, parse_frame_list

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

PNG, JPEG = "image/png", "image/jpeg"
FUNCTIONS = {"linear": "LINEAR", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "头", "颅", "脑")
MAX_VIEWPORT = 4096
LUT_MIN_PIXELS = 4096
LUT_MAX_ENTRIES = 1 << 17
# no stored pixel value (32 bits at most) is further out: larger windows only overflow
MAX_WINDOW = 1e10


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


def parse_window(value: str) -> Window:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise bad_request("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise bad_request("window center and width must be numbers") from None
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise bad_request("window width must be a positive number")
    if abs(center) > MAX_WINDOW or width > MAX_WINDOW:
        raise bad_request(f"window center and width must be within {MAX_WINDOW:g}")
    function = "LINEAR"
    if len(parts) == 3:
        key = parts[2].lower().replace("-", "_")
        if key not in FUNCTIONS:
            raise bad_request("window function must be linear, linear-exact or sigmoid")
        function = FUNCTIONS[key]
    return Window(center, width, function)


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def file_window(ds: Attributes) -> Window | None:
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(center, width, function if function in FUNCTIONS.values() else "LINEAR")


def default_window(ds: Attributes) -> Window | None:
    if str(ds.get("Modality", "")).upper() != "CT":
        return None
    text = " ".join(
        str(ds.get(k, "") or "")
        for k in ("BodyPartExamined", "StudyDescription", "SeriesDescription")
    ).upper()
    if any(word in text for word in HEAD_WORDS):
        return Window(40.0, 80.0)
    return Window(40.0, 400.0)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> 0..255 floats (PS3.3 C.11.2.1.2)."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):  # far below the centre: exp -> inf, the value -> 0
            return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip(((values - c) / w + 0.5) * 255.0, 0.0, 255.0)
    if w <= 1:
        return np.where(values > c - 0.5, 255.0, 0.0)
    return np.clip(((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)


def to_display(arr: np.ndarray, ds: Attributes, window: Window | None) -> np.ndarray:
    """A decoded frame -> uint8 grey (H x W) or RGB (H x W x 3)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 or arr.ndim == 3:
        if arr.dtype == np.uint8:
            return arr
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
        return np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    slope = _first_number(ds.get("RescaleSlope")) or 1.0
    intercept = _first_number(ds.get("RescaleIntercept")) or 0.0
    window = window or file_window(ds) or default_window(ds)
    invert = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if arr.dtype.kind in "iu" and arr.size > LUT_MIN_PIXELS:
        # integer pixels: window each distinct stored value once, then look them up
        low, high = int(arr.min()), int(arr.max())
        if high - low < LUT_MAX_ENTRIES:
            stored = np.arange(low, high + 1, dtype=np.float32)
            return look_up(_grey(stored * slope + intercept, window, invert), arr, low)
    return _grey(arr.astype(np.float32) * slope + intercept, window, invert)


def look_up(lut: np.ndarray, arr: np.ndarray, low: int) -> np.ndarray:
    """``lut[arr - low]`` for integer pixels whose values lie in ``low .. low + len(lut) - 1``.

    When the table changes only within 256 consecutive entries (a window narrower than that
    in stored values: brain 80, stroke 40, subdural 215 wide), the pixels are clipped to that
    stretch, made bytes and mapped by ``bytes.translate``: several times faster than numpy's
    ``take``, which first widens every index to 64 bits. Exact: outside the stretch the
    table is constant."""
    changes = np.flatnonzero(lut[1:] != lut[:-1])  # i where lut[i] != lut[i + 1]
    if changes.size == 0:
        return np.full(arr.shape, lut[0], dtype=np.uint8)
    first, last = int(changes[0]), int(changes[-1]) + 1  # constant on ..first and last..
    if last - first < 256:
        table = lut[first : last + 1].tobytes().ljust(256, b"\0")
        index = np.clip(arr, low + first, low + last)
        # 0 .. last - first; in int8 that may wrap, and the cast to uint8 undoes it
        index -= arr.dtype.type(low + first)
        mapped = index.astype(np.uint8).tobytes().translate(table)
        return np.frombuffer(mapped, dtype=np.uint8).reshape(arr.shape)
    # offsets from ``low`` in the pixels' own width: the subtraction may wrap, but every
    # true offset (0..high-low) fits that width unsigned, so the view is exact
    offsets = arr - arr.dtype.type(low)
    return lut.take(offsets.view(np.dtype(f"u{arr.itemsize}")))


def _grey(values: np.ndarray, window: Window | None, invert: bool) -> np.ndarray:
    if window is None:  # nothing says how to show it: stretch
        low, high = float(values.min()), float(values.max())
        window = Window((low + high) / 2 + 0.5, max(high - low + 1, 1.0))
    out = apply_window(values, window)
    if invert:
        out = 255.0 - out
    return (out + 0.5).astype(np.uint8)


def parse_viewport(value: str) -> tuple[int, int]:
    parts = value.split(",")
    try:
        w, h = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise bad_request("viewport must be width,height") from None
    if not (0 < w <= MAX_VIEWPORT and 0 < h <= MAX_VIEWPORT):
        raise bad_request(f"viewport sides must be 1..{MAX_VIEWPORT}")
    return w, h


def encode(
    pixels: np.ndarray, media_type: str, *, quality: int, viewport: tuple[int, int] | None
) -> bytes:
    image = Image.fromarray(pixels)
    if viewport is not None:
        scale = min(viewport[0] / image.width, viewport[1] / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    if media_type != JPEG:
        return png_bytes(np.asarray(image))
    buf = BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of 8-bit grey (H x W) or RGB (H x W x 3) pixels, deflated with zlib's run-length
    strategy: a few times faster than Pillow's default for a similar size on CT images
    (large flat areas), which is what keeps a scrolled series smooth."""
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(height, -1)
    filtered = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0: None
    filtered[:, 1:] = rows
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(filtered.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )


def choose_media_type(accept: str | None) -> str:
    for media in parse_accept(accept):
        kind = media.media_type
        if kind in (PNG, JPEG):
            return kind
        if kind in ("image/*", "*/*", "image/jpg"):
            return JPEG if kind == "image/jpg" else PNG
    raise not_acceptable("rendered frames are image/png or image/jpeg")


def _render(
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
    window: str | None,
    quality: int,
    viewport: str | None,
    accept: str | None,
) -> Response:
    media_type = choose_media_type(request.query_params.get("accept") or accept)
    chosen = parse_window(window) if window else None
    size = parse_viewport(viewport) if viewport else None
    instance = find_instance(
        session=session, viewer=user, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
    )
    session.commit()  # done with the database: its connection is not held while rendering
    frames: Frames = frames_of(request)
    fast = frames.native_frame_from_header(instance, frame - 1)
    try:
        if fast is not None:
            arr, header = fast
            pixels = to_display(arr, header, chosen)
        else:
            pixels = _parsed_display(frames, instance, sop_uid, frame, chosen)
    except (PixelError, ValueError, NotImplementedError, RuntimeError, AttributeError) as exc:
        logger.warning(
            "cannot render frame",
            extra={"action": "render_failed", "sop_uid": sop_uid, "error": type(exc).__name__},
        )
        raise not_acceptable("this instance's pixel data cannot be rendered") from exc
    body = encode(pixels, media_type, quality=quality, viewport=size)
    return Response(body, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


def _parsed_display(
    frames: Frames, instance: StoredInstance, sop_uid: str, frame: int, chosen: Window | None
) -> np.ndarray:
    """The frame through pydicom: parse the object, decode the frame, window it."""
    try:
        ds = frames.dataset(instance)
    except PixelError as exc:
        logger.warning(
            "stored object unreadable",
            extra={"action": "render_failed", "sop_uid": sop_uid, "error": "PixelError"},
        )
        raise unreadable() from exc
    if frame > frames.count(ds):
        raise (
            bad_request(f"the instance has {frames.count(ds)} frame(s)")
            if frames.count(ds)
            else not_acceptable("the instance has no pixel data to render")
        )
    arr = frames.decoded(instance, ds, frame - 1)
    return to_display(arr, ds, chosen)


def _quality(value: str | None) -> int:
    if value is None:
        return 90
    try:
        quality = int(value)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise bad_request("quality must be a whole number from 1 to 100")
    return quality


async def _serve_rendered(request: Request) -> Response:
    """Both rendered routes, without FastAPI's per-request machinery (``dicomweb.fast``).
    The checks are the documented routes' (below), in the same order: ``check_url_inputs``
    (NUL 400, UID grammar 422), the bearer token (401), a viewer role (403), the parameters
    (400), a study the caller may see (404); one session, rolled back on failure."""
    path = request.path_params
    session: Session = request.app.state.session_factory()
    try:
        user = await fast.viewer(request, session)
        frame = 1
        if "frame" in path:
            numbers = parse_frame_list(path["frame"])
            if len(numbers) != 1:
                raise bad_request("render one frame at a time")
            frame = numbers[0]
        query = request.query_params
        quality = _quality(query.get("quality"))
        return await fast.in_thread(
            session,
            lambda: _render(
                request,
                session,
                user,
                path["study_uid"],
                path["series_uid"],
                path["sop_uid"],
                frame,
                query.get("window"),
                quality,
                query.get("viewport"),
                request.headers.get("accept"),
            ),
        )
    finally:
        session.close()  # no I/O: the worker closed it, or no query ran


_IMAGES: dict[int | str, dict[str, Any]] = {200: {"content": {PNG: {}, JPEG: {}}}}
Quality = Annotated[int, Query(ge=1, le=100)]
AcceptHeader = Annotated[str | None, Header()]


_INSTANCE = "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
# Both rendered paths served by _serve_rendered. ``create_app`` puts these first in the
# app's routes (matching a request through every included router costs more than the route
# itself); the FastAPI routes below behave the same and document the parameters in the
# OpenAPI schema, and answer where these are not installed.
FAST_ROUTES = [
    Route(path, _serve_rendered, methods=["GET"], include_in_schema=False)
    for path in (_INSTANCE + "/rendered", _INSTANCE + "/frames/{frame}/rendered")
]


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    responses=_IMAGES,
)
def rendered_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    return _render(
        request, session, user, study_uid, series_uid, sop_uid, 1, window, quality, viewport, accept
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered",
    responses=_IMAGES,
)
def rendered_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: str,
    request: Request,
    session: SessionDep,
    user: ViewerUser,
    window: str | None = None,
    quality: Quality = 90,
    viewport: str | None = None,
    accept: AcceptHeader = None,
) -> Response:
    numbers = parse_frame_list(frame)
    if len(numbers) != 1:
        raise bad_request("render one frame at a time")
    return _render(
        request,
        session,
        user,
        study_uid,
        series_uid,
        sop_uid,
        numbers[0],
        window,
        quality,
        viewport,
        accept,
    )
