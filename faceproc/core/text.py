"""Plain-text tables for the console (the accuracy table, `faceproc predict`'s faces, run summaries)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def aligned_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[str]) -> list[str]:
    """Header, a line of dashes, then the rows: every column padded to its widest cell, the columns
    named in `right` (numbers) right-aligned, trailing blanks stripped."""
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers)]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def key_values(lines: Sequence[tuple[str, Any]]) -> str:
    """One `name  value` line per pair, the values in one column: a stage's summary."""
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def plural(count: int, noun: str) -> str:
    """"1 epoch", "3 epochs"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
