#!/usr/bin/env python
"""Listing an input tree on object storage: faceproc's folder-parallel listing against one thread.

A real S3 API (moto's standalone server from the dev extras) is started on a loopback port, and a
tree `tree/train/person_<k>/<n>.jpg` of small objects is uploaded to it (`--objects`, `--per-folder`
per person folder). Then, each `--repeats` times, in this process:

1. `discover("s3://.../tree")`: what `faceproc preprocess` does, one LIST request per folder
   (`preprocess.discover.LISTING_THREADS` folders at once), each folder's entries turned into Arrow;
2. the same code with one listing thread: the baseline, every folder's LIST after the previous one;
3. pyarrow's recursive listing of the whole tree (`FileSelector(recursive=True)`): one paginated
   ListObjectsV2 of 1000 keys per page, what a lister that ignores the folders does.

After one untimed warm-up listing, printed: the median seconds of each, files listed per second and the ratios against the
one-thread baseline. moto answers a LIST in a few milliseconds on loopback; a real S3 endpoint takes
tens of milliseconds a request, so the folder-parallel listing gains more there, not less.

    python bench/s3_listing.py [--objects 10000] [--per-folder 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import machine  # noqa: E402  (bench/machine.py)

BUCKET = "bench-listing"
OBJECT_BYTES = 1024


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto_server on a free loopback port; returns the process and its endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"moto_server did not start on port {port}") from None
            time.sleep(0.2)


def upload_tree(fs, objects: int, per_folder: int) -> None:
    """`objects` keys of OBJECT_BYTES under BUCKET/tree/train/person_<k>/, 16 PUTs at once."""
    payload = os.urandom(OBJECT_BYTES)

    def put(index: int) -> None:
        with fs.open_output_stream(f"{BUCKET}/tree/train/person_{index // per_folder:05d}/{index:07d}.jpg") as out:
            out.write(payload)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(objects)))


def timed(function, repeats: int) -> tuple[float, int]:
    """Median seconds over `repeats` calls, and what the last call returned (files listed)."""
    seconds, count = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--per-folder", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    server, endpoint = start_moto()
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        import pyarrow.fs as pafs

        from faceproc.preprocess import discover as listing

        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        print(f"uploading {args.objects} objects to {endpoint} ...", flush=True)
        started = time.perf_counter()
        upload_tree(fs, args.objects, args.per_folder)
        print(f"uploaded in {time.perf_counter() - started:.1f} s; load {machine.loadavg()}", flush=True)
        uri = f"s3://{BUCKET}/tree"
        folders = -(-args.objects // args.per_folder)

        def faceproc_listing() -> int:
            return listing.discover(uri).files.num_rows

        def one_thread() -> int:
            threads, listing.LISTING_THREADS = listing.LISTING_THREADS, 1
            try:
                return listing.discover(uri).files.num_rows
            finally:
                listing.LISTING_THREADS = threads

        def recursive() -> int:
            selector = pafs.FileSelector(f"{BUCKET}/tree", recursive=True)
            return sum(info.type == pafs.FileType.File for info in fs.get_file_info(selector))

        recursive()  # warm-up: the first request also opens connections
        before = machine.snapshot()
        results = [(f"faceproc: folder-parallel ({listing.LISTING_THREADS} threads)", *timed(faceproc_listing, args.repeats)),
                   ("baseline: the same, one thread", *timed(one_thread, args.repeats)),
                   ("pyarrow recursive listing (1000 keys a page)", *timed(recursive, args.repeats))]
        after = machine.snapshot()
    finally:
        server.kill()
        server.wait()

    baseline = results[1][1]
    print(f"\n{args.objects} objects in {folders} folders of {args.per_folder}, moto on loopback; median of "
          f"{args.repeats}; machine busy cores {machine.busy_cores(before, after):.2f}; {machine.uptime()}\n")
    print("| listing | seconds | files | files/s | one-thread baseline / this |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, count in results:
        print(f"| {name} | {seconds:.2f} | {count} | {count / seconds:,.0f} | {baseline / seconds:.2f}x |")
    if any(count != args.objects for _, _, count in results):
        print("a listing missed objects", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
