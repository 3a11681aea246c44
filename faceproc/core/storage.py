"""Paths that may be local or URIs (s3://, gs://): one place that talks to pyarrow's filesystems.

Every output is written to a temporary name and moved into place, so readers never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from faceproc.core.errors import message_or_type

# pyarrow's GCS client retries a failing request for 15 minutes: without credentials (or network), a
# command hung that long before saying anything; a minute still rides out a transient error
GCS_RETRY_SECONDS = 60


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it for a local path or a URI."""
    if "://" in uri:
        if uri.startswith(("gs://", "gcs://")) and "retry_limit_seconds=" not in uri:
            uri += ("&" if "?" in uri else "?") + f"retry_limit_seconds={GCS_RETRY_SECONDS}"
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts the same way for local paths and URIs."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def reachable_or_reason(uri: str) -> str | None:
    """None when `uri`'s filesystem can be asked about it, else why not in one line (an unknown
    scheme, a host that cannot be resolved, missing credentials), before any work relies on it."""
    try:
        fs, path = resolve(uri)
        fs.get_file_info(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return message_or_type(exc)
    return None


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Files directly under `uri` (not recursive) whose names end with `suffix`, sorted; [] if absent."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    prefix = uri.rstrip("/")
    return sorted(
        f"{prefix}/{info.base_name}"
        for info in infos
        if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
    )


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read()


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write to a sibling temporary name, then move over `uri` (atomic on local disks)."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
    try:
        with fs.open_output_stream(tmp) as stream:
            stream.write(data)
        fs.move(tmp, path)
    except BaseException:  # a full disk, a refused move, Ctrl-C: no temporary file is left behind
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def write_json_atomic(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_table_atomic(uri: str, table: pa.Table) -> None:
    """Write a Parquet file under a temporary name and move it into place."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def read_schema(uri: str) -> pa.Schema:
    """A Parquet file's schema, from its footer alone."""
    fs, path = resolve(uri)
    return pq.read_schema(path, filesystem=fs)


def sha256(uri: str) -> str:
    """SHA-256 of a file's content, read in 1 MiB chunks so memory stays flat."""
    fs, path = resolve(uri)
    digest = hashlib.sha256()
    with fs.open_input_stream(path, compression=None) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_or_none(uri: str) -> str | None:
    """`sha256`, or None for a file that cannot be read now (planning processes it again, and the
    worker that reads it records the read_error)."""
    try:
        return sha256(uri)
    except OSError:
        return None


def move(src: str, dst: str) -> None:
    fs, src_path = resolve(src)
    _, dst_path = resolve(dst)
    fs.create_dir(dst_path.rsplit("/", 1)[0], recursive=True)
    fs.move(src_path, dst_path)


def delete_dir(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def list_dirs(uri: str) -> list[str]:
    """Names of the sub-directories of `uri`, sorted, without faceproc's own ("." or "_" first)."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.base_name for i in infos
                  if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))


def replace_dir(staging: str, target: str) -> None:
    """Put the fully written directory `staging` at `target`, replacing what was there.

    On a local disk these are renames: readers see the old or the new directory, never a mix, and a
    crash between the two renames is undone by `restore_dir`. Object storage has no rename: files
    are copied one by one, so a crash there can leave a mix until the next successful write."""
    previous = _previous(target)
    delete_dir(previous)
    if exists(target):
        _move_tree(target, previous)
    _move_tree(staging, target)
    delete_dir(previous)


def restore_dir(target: str) -> None:
    """Undo a `replace_dir` that died between moving the old directory aside and the new one in."""
    previous = _previous(target)
    if exists(previous) and not exists(target):
        _move_tree(previous, target)
    delete_dir(previous)


def _previous(target: str) -> str:
    parent, _, name = target.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.previous" if parent else f".{name}.previous"


def _move_tree(src: str, dst: str) -> None:
    if is_local(src):
        move(src, dst)
        return
    fs, src_path = resolve(src)
    for info in fs.get_file_info(pafs.FileSelector(src_path, recursive=True)):
        if info.type == pafs.FileType.File:
            move(join(src, info.path[len(src_path):].lstrip("/")), join(dst, info.path[len(src_path):].lstrip("/")))
    delete_dir(src)
