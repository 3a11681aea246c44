"""Find input photos under `<root>/<split>/<person>/<file>` (or, for `identify`, anywhere under
`<root>`) on a local disk or object storage, as one Arrow table.

The tree is listed one folder at a time, several folders at once (an object store answers one
prefix per request), and each folder's entries become Arrow columns as soon as they arrive: the
driver never holds a Python object per file of the whole tree, only per file of one folder.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from faceproc.core import layout, storage
from faceproc.core.errors import describe

SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
LISTING_THREADS = 16  # folders listed at once; pyarrow's listing releases the GIL
LISTING_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("split", pa.string()),  # null when the file is not at <split>/<person>/<file>, or unlabelled
    ("label", pa.string()),
    ("size", pa.int64()),  # with mtime_ns, tells an unchanged file without reading it
    ("mtime_ns", pa.int64()),
    ("layout_error", pa.string()),  # why the file is not at <split>/<person>/<file>; null when it is
])


class UnlistableFolder(RuntimeError):
    """A folder of the input could not be listed: the run stops, since taking its photos for deleted
    would drop them from the manifest and the models."""


@dataclass(frozen=True)
class Discovery:
    files: pa.Table  # LISTING_SCHEMA, one row per non-hidden file, sorted by path
    skipped: int = 0  # hidden and system files, counted but never processed

    @property
    def unused_splits(self) -> dict[str, int]:
        """Photos per split folder that neither training nor evaluation reads (`Train/`, `test/`, ...):
        preprocessed like the others, so they are said, not silently left out."""
        counts = pc.value_counts(pc.drop_null(self.files["split"])).to_pylist()  # one entry per split
        return {entry["values"]: entry["counts"] for entry in sorted(counts, key=lambda entry: entry["values"])
                if entry["values"] not in (layout.TRAIN_SPLIT, layout.VAL_SPLIT)}

    @property
    def labels(self) -> list[str]:
        placed = self.files.filter(pc.is_null(self.files["layout_error"]))
        return sorted(label for label in pc.unique(placed["label"]).to_pylist() if label)


@dataclass(frozen=True)
class _Folder:
    """One listed folder: its subfolders (as parts relative to the root) and its files."""

    subfolders: list[tuple[str, ...]]
    files: pa.RecordBatch
    skipped: int


def is_hidden(relative_parts: list[str] | tuple[str, ...]) -> bool:
    """Dot-files, dot-folders, macOS resource forks (`__MACOSX/`) and OS thumbnail databases."""
    return any(p.startswith(".") or p == "__MACOSX" for p in relative_parts) or (
        relative_parts[-1].lower() in SYSTEM_FILES
    )


def discover(root: str) -> Discovery:
    """Every non-hidden file under `root`; files not at <split>/<person>/<file> carry a layout error.

    The listing's size and modification time are all a rerun needs to find new and changed files."""
    return _list_tree(root, labelled=True)


def list_photos(root: str) -> Discovery:
    """Every non-hidden file under `root` at any depth (`identify`: unlabelled photos in any layout,
    so no file has a split, a person or a layout error)."""
    return _list_tree(root, labelled=False)


def _list_tree(root: str, labelled: bool) -> Discovery:
    fs, base = storage.resolve(root)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    prefix, base = root.rstrip("/"), base.rstrip("/")
    batches, skipped = [], 0
    with ThreadPoolExecutor(max_workers=LISTING_THREADS) as pool:
        def submit(parts: tuple[str, ...]) -> Future:
            return pool.submit(_list_folder, fs, base, prefix, parts, labelled)

        pending = {submit(())}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                folder = future.result()
                batches.append(folder.files)
                skipped += folder.skipped
                pending |= {submit(parts) for parts in folder.subfolders}
    table = pa.Table.from_batches(batches, schema=LISTING_SCHEMA)
    return Discovery(table.sort_by("path"), skipped)


def _list_folder(fs: pafs.FileSystem, base: str, prefix: str, parts: tuple[str, ...], labelled: bool) -> _Folder:
    """List one folder (not recursively): its files as a record batch, its subfolders to list next."""
    try:
        entries = fs.get_file_info(pafs.FileSelector("/".join([base, *parts]), recursive=False))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else describe(exc)  # pyarrow's strerror repeats the path
        raise UnlistableFolder(f"cannot list {'/'.join([prefix, *parts])} in the input ({reason}): "
                               "nothing was processed; make it readable, or move it out of the input") from exc
    subfolders = [(*parts, entry.base_name) for entry in entries if entry.type == pafs.FileType.Directory]
    files = [entry for entry in entries if entry.type == pafs.FileType.File]
    kept = [entry for entry in files if not is_hidden((*parts, entry.base_name))]
    names = [entry.base_name for entry in kept]
    placed = labelled and len(parts) == 2
    split, label = (parts[0], parts[1]) if placed else (None, None)
    errors = [None if placed or not labelled else layout_error((*parts, name)) for name in names]
    folder = "/".join([prefix, *parts])
    columns = {
        "path": [f"{folder}/{name}" for name in names],
        "split": [split] * len(names),
        "label": [label] * len(names),
        "size": [entry.size for entry in kept],
        "mtime_ns": [entry.mtime_ns for entry in kept],
        "layout_error": errors,
    }
    return _Folder(subfolders, pa.RecordBatch.from_pydict(columns, schema=LISTING_SCHEMA), len(files) - len(kept))


def layout_error(parts: tuple[str, ...]) -> str:
    return f"expected <split>/<person>/<file> under the input folder, found {'/'.join(parts)!r}"
