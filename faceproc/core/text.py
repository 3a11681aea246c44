"""Plain-text tables for the console (the accuracy table, `faceproc predict`'s faces, run summaries)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from wcwidth import wcswidth


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: 2 for each CJK character, 0 for a combining accent."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)  # a control character: count code points


def aligned_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[str]) -> list[str]:
    """Header, a line of dashes, then the rows: every column padded to its widest cell on screen
    (file and person names may be CJK), the columns named in `right` (numbers) right-aligned,
    trailing blanks stripped."""
    widths = [max([display_width(header), *(display_width(row[i]) for row in rows)])
              for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(_padded(c, w, h in right) for c, w, h in zip(cells, widths, headers)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def key_values(lines: Sequence[tuple[str, Any]]) -> str:
    """One `name  value` line per pair, the values in one column: a stage's summary."""
    width = max(display_width(name) for name, _ in lines)
    return "\n".join(f"{_padded(name, width)}  {value}" for name, value in lines)


def _padded(cell: str, width: int, to_right: bool = False) -> str:
    """`cell` with blanks to `width` screen columns, after it (or before it, `to_right`)."""
    blanks = " " * (width - display_width(cell))
    return blanks + cell if to_right else cell + blanks


def plural(count: int, noun: str) -> str:
    """"1 epoch", "3 epochs"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
