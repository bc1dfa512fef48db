"""multipart/related bodies (PS3.18 8.6) and the Accept header's media ranges."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One entry of an Accept header: ``multipart/related; type="application/dicom";
    transfer-syntax=*`` -> media_type "multipart/related", params {"type": ..., ...}."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def part_type(self) -> str:
        """The ``type`` of a multipart range, or the media type itself otherwise."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "*/*").lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's ranges, best quality first (stable); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for item in _split(header, ","):
        head, *rest = _split(item, ";")
        params: dict[str, str] = {}
        quality = 1.0
        for param in rest:
            name, _, value = param.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            else:
                params[name] = value
        ranges.append(MediaRange(head.strip().lower(), params, quality))
    ranges = [r for r in ranges if r.quality > 0]
    ranges.sort(key=lambda r: -r.quality)
    return ranges


def new_boundary() -> str:
    return "teleread-" + secrets.token_hex(16)


def content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_header(boundary: str, media_type: str, location: str | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {media_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def encode(boundary: str, parts: Iterable[tuple[str, bytes]]) -> bytes:
    """A whole body from ``(media type, content)`` parts."""
    return b"".join(stream(boundary, ((t, iter((c,))) for t, c in parts)))


def stream(boundary: str, parts: Iterable[tuple[str, Iterator[bytes]]]) -> Iterator[bytes]:
    """A body, part by part, each part's content as chunks (nothing buffered whole)."""
    for media_type, chunks in parts:
        yield part_header(boundary, media_type)
        yield from chunks
        yield b"\r\n"
    yield closing(boundary)


def decode(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into (headers, content) pairs (for tests and tools)."""
    marker = b"--" + boundary.encode("ascii")
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.split(marker)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts
