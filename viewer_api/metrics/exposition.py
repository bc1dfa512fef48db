"""The Prometheus text format (version 0.0.4): metric families written as lines."""

from __future__ import annotations

from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "teleread_api_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


def format_number(value: float) -> str:
    """Integers exactly (``:g`` would print 1234567 as 1.23457e+06), floats in full."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Accumulates metric families in the text format."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Iterable[tuple[str, str]], float]],
    ) -> None:
        full = self.prefix + name
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{format_labels(labels)} {format_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
