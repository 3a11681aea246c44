"""Find input photos under `<root>/<split>/<person>/<file>` (or, for `identify`, anywhere under
`<root>`) on a local disk or object storage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from faceproc.core import storage

SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})


@dataclass(frozen=True)
class InputFile:
    """One discovered file; `layout_error` is set when it is not at <split>/<person>/<file>."""

    path: str
    split: str | None
    label: str | None
    size: int
    mtime_ns: int | None = None  # from the listing; with `size` it tells an unchanged file without reading it
    layout_error: str | None = None


@dataclass
class Discovery:
    files: list[InputFile] = field(default_factory=list)
    skipped: int = 0  # hidden and system files, counted but never processed

    @property
    def labels(self) -> list[str]:
        return sorted({f.label for f in self.files if f.label and not f.layout_error})


def is_hidden(relative_parts: list[str]) -> bool:
    """Dot-files, dot-folders, macOS resource forks (`__MACOSX/`) and OS thumbnail databases."""
    return any(p.startswith(".") or p == "__MACOSX" for p in relative_parts) or (
        relative_parts[-1].lower() in SYSTEM_FILES
    )


def discover(root: str) -> Discovery:
    """Walk `root` recursively; every non-hidden file becomes an InputFile, sorted by path.

    The listing's size and modification time are all a rerun needs to find new and changed files."""
    found = Discovery()
    for parts, path, entry in _walk(root, found):
        if len(parts) == 3:
            found.files.append(InputFile(path, parts[0], parts[1], entry.size, entry.mtime_ns))
        else:
            detail = (f"expected <split>/<person>/<file> under the input folder, found "
                      f"{'/'.join(parts)!r}")
            found.files.append(InputFile(path, None, None, entry.size, entry.mtime_ns, layout_error=detail))
    found.files.sort(key=lambda f: f.path)
    return found


def list_photos(root: str) -> Discovery:
    """Every non-hidden file under `root` at any depth, sorted by path (`identify`: unlabelled photos
    in any layout, so no file has a split, a person or a layout error)."""
    found = Discovery()
    found.files = sorted((InputFile(path, None, None, entry.size, entry.mtime_ns)
                          for _, path, entry in _walk(root, found)), key=lambda f: f.path)
    return found


def _walk(root: str, found: Discovery) -> Iterator[tuple[list[str], str, pafs.FileInfo]]:
    """(parts relative to `root`, path, listing entry) of every file; hidden ones counted in `found`."""
    fs, base = storage.resolve(root)
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    prefix = root.rstrip("/")
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type != pafs.FileType.File:
            continue
        parts = entry.path[len(base.rstrip("/")) + 1:].split("/")
        if is_hidden(parts):
            found.skipped += 1
            continue
        yield parts, "/".join([prefix, *parts]), entry
