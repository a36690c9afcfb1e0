"""Plain-text tables and number formats shared by every report the toolkit prints."""

from __future__ import annotations

import math
from collections.abc import Sequence


def grid(header: Sequence[str], rows: Sequence[Sequence[str]],
         aligns: Sequence[str] | None = None) -> str:
    """Columns padded to their widest cell under a rule; ``aligns`` holds '<' or '>' per
    column (default: the first left, the rest right)."""
    aligns = aligns or ["<"] + [">"] * (len(header) - 1)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, digits: int = 2) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"


def percent(value: float | None, digits: int = 2, unit: str = "") -> str:
    """A fraction as a percentage (0.9912 -> '99.12' + unit); '-' when missing."""
    return "-" if _missing(value) else f"{100 * value:.{digits}f}{unit}"


def points(value: float | None, reference: float | None, digits: int = 3) -> str:
    """The difference of two fractions in signed percentage points."""
    if _missing(value) or _missing(reference):
        return "-"
    return f"{100 * (value - reference):+.{digits}f}"


def scientific(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.3e}"
