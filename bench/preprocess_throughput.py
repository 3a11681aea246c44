#!/usr/bin/env python
"""Preprocessing throughput: `faceproc preprocess` against the notebook's serial loop.

On the same photos (the 5 Celebrity Faces dataset replicated to --copies x 118 files, every copy a
distinct file with identical pixels), in one invocation:

1. faceproc: `faceproc preprocess --input TREE --output OUT` as a subprocess with a fresh OUT.
   Wall clock end to end (Python imports, Ray start-up, the Ray Data job, publishing, Ray
   shut-down; a run of at most `preprocess.driver_max_photos` photos detects in the driver and
   starts no Ray); the run's own `seconds` from OUT/runs/*.preprocess.json (starts before any Ray
   start-up, ends after the manifest is published); and that minus the Ray start-up time measured
   by a separate probe process, when the run started Ray. The driver's peak RSS (VmHWM of the
   driver process only, not of the Ray workers) is sampled from /proc.
2. Baseline: the reference notebook's loop in one subprocess with TensorFlow defaults: one
   `MTCNN()`, one photo per `detect_faces` call, the first face, `abs()` on the box corner, PIL
   resize to 160x160, two augmented copies per train photo
   (`faceproc.preprocess.augment.augment_face`, so the augmentation cost is the same), everything
   kept in a Python list. Only the loop is timed; imports and model load are reported separately.
   The same loop with TensorFlow pinned to one thread runs on one copy of the dataset (118 photos)
   for the per-core view.
3. Detection per core: `faceproc.preprocess.detector.FaceDetector` (default PreprocessConfig) on the
   118 decoded photos in batches of 8 (as the pipeline feeds it), TensorFlow pinned to 1 intra-op
   and 1 inter-op thread and OpenCV to 1 thread, against facenet-pytorch's MTCNN, measured on the
   same kind of 2-core machine on these 118 photos, one photo per call, one CPU thread: 10.4
   photos/s (a fixed figure, not re-measured by this script). Also the same detector one photo per
   call; in batches of 8 with mtcnn's own numpy hand-over in place of faceproc's TensorBatchStage
   (the baseline of that choice); and that with mtcnn's own eager networks in place of faceproc's
   tf.function graphs too (mtcnn as shipped: the baseline of both).
4. --scale-check: faceproc on 1x (--scale-base copies) and 10x that input, both in the actor pool
   (`preprocess.driver_max_photos=0`: in the driver the rows of a run are held until it writes them);
   the driver's peak RSS should stay flat. The two runs also give a marginal rate (extra photos /
   extra seconds) that no fixed start-up cost can distort.

Ray is started locally for every faceproc run that uses the actor pool (RAY_ADDRESS=local) so that
the benchmark never joins somebody else's cluster; pass --ray-address to change that. Other jobs on
the machine skew numbers: the load average and the machine's busy cores during each phase are
printed with it.

    .venv/bin/python bench/preprocess_throughput.py [--copies 9] [--scale-check] [--out /tmp/DIR]

Results: a table on stdout and OUT/results.json. Write-up: docs/benchmarks.md, "Preprocessing".
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"
FACEPROC = Path(sys.executable).parent / "faceproc"
# facenet-pytorch's MTCNN on the 118 photos, one photo per call, one CPU thread, measured on the same
# kind of 2-core machine (not re-measured here).
FACENET_PYTORCH_MTCNN = 10.4  # photos/s
TARGET_RATIO = 3.0
FLAT_RSS_RATIO = 1.2  # driver peak RSS at 10x input over 1x: above this it grows with the data
DETECT_BATCH = 8
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1",
            "PYTHONWARNINGS": "ignore::DeprecationWarning"}


# --------------------------------------------------------------------------- input tree


def source_files(root: Path) -> list[Path]:
    """Photos under <root>/<split>/<person>/, sorted; hidden files skipped."""
    return sorted(p for p in root.glob("*/*/*") if p.is_file() and not p.name.startswith("."))


def make_distinct(data: bytes, tag: str) -> bytes:
    """`data` with `tag` added where decoders ignore it: pixels, and decode cost, stay the same.

    JPEG: bytes after the EOI marker (Pillow stops at EOI). PNG: a tEXt chunk before IEND.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        iend = data.rfind(b"IEND") - 4  # the chunk starts with its 4-byte length
        body = b"tEXt" + b"faceproc-bench\x00" + tag.encode()
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        return data[:iend] + chunk + data[iend:]
    if data.startswith(b"\xff\xd8"):
        return data + b"faceproc-bench " + tag.encode()
    raise ValueError("only JPEG and PNG inputs are replicated")


def build_tree(dst: Path, copies: int) -> int:
    """`copies` distinct copies of every dataset photo under dst/<split>/<person>/<copy>_<name>."""
    if dst.exists():
        shutil.rmtree(dst)
    hashes = set()
    count = 0
    for src in source_files(DATASET):
        split, person = src.parent.parent.name, src.parent.name
        folder = dst / split / person
        folder.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        for copy in range(copies):
            out = make_distinct(data, f"copy {copy}")
            (folder / f"{copy:03d}_{src.name}").write_bytes(out)
            hashes.add(hashlib.sha256(out).hexdigest())
            count += 1
    if len(hashes) != count:
        raise RuntimeError(f"replicated tree has {count} files but only {len(hashes)} distinct contents")
    return count


def check_same_pixels(tree: Path) -> None:
    """The copy-0 files decode to exactly the pixels of the originals."""
    import numpy as np
    from PIL import Image

    for src in source_files(DATASET):
        copy = tree / src.parent.parent.name / src.parent.name / f"000_{src.name}"
        a = np.asarray(Image.open(src).convert("RGB"))
        b = np.asarray(Image.open(copy).convert("RGB"))
        if a.shape != b.shape or not (a == b).all():
            raise RuntimeError(f"{copy} does not decode to the pixels of {src}")


# --------------------------------------------------------------------------- machine state


class Phase:
    """Wall time, load average and the machine's busy cores over one benchmark phase.

    Set `own_cpu` (CPU seconds of the benchmarked process tree) to also get the cores that other
    jobs on the machine took meanwhile.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.own_cpu: float | None = None

    def __enter__(self) -> Phase:
        self.start = machine.snapshot()
        self.load_before = self.start.load
        print(f"[{time.strftime('%H:%M:%S')}] {self.name} (load {self.load_before}) ...", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        end = machine.snapshot()
        self.seconds = end.at - self.start.at
        self.busy_cores = machine.busy_cores(self.start, end)
        self.load_after = end.load
        self.other_cores = (None if self.own_cpu is None
                            else machine.other_cores(self.busy_cores, self.own_cpu, self.seconds))
        other = "" if self.other_cores is None else f" (other jobs ~{self.other_cores:.2f})"
        print(f"[{time.strftime('%H:%M:%S')}] {self.name}: {self.seconds:.1f} s, machine busy "
              f"{self.busy_cores:.2f} of {machine.CPUS} cores{other}, load {self.load_after}", flush=True)

    def to_dict(self) -> dict:
        return {"wall_seconds": round(self.seconds, 2), "machine_busy_cores": round(self.busy_cores, 2),
                "other_jobs_cores": None if self.other_cores is None else round(self.other_cores, 2),
                "load_before": self.load_before, "load_after": self.load_after}


def tree_cpu_fields(run: machine.TreeRun) -> dict:
    """The CPU seconds of a watched run's process tree, as results.json reports them."""
    return {"tree_cpu_seconds": round(run.tree_cpu, 1), "tree_cpu_polled": round(run.polled_cpu, 1),
            "tree_cpu_waited": round(run.waited_cpu, 1)}


def worker(mode: str, result: Path, *args: str, env: dict | None = None) -> dict:
    """Run this script in `mode` in a fresh process and return the JSON it wrote."""
    env = {**os.environ, **QUIET_TF, **(env or {})}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--result", str(result), *args]
    run = machine.run_watched(cmd, result.with_suffix(".log"), env=env, cwd=ROOT)
    if run.code != 0:
        tail = result.with_suffix(".log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{mode} worker failed (exit {run.code}):\n{tail}")
    out = json.loads(result.read_text())
    out["process_wall_seconds"] = round(run.wall, 2)
    out["peak_rss_mb"] = round(run.peak_rss_kb / 1024, 1)
    out.update(tree_cpu_fields(run))
    return out


# --------------------------------------------------------------------------- workers (subprocesses)


def _pin_threads() -> None:
    """One TensorFlow and one OpenCV thread; must run before any TensorFlow op."""
    import cv2
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)


def worker_baseline(tree: Path, threads: str) -> dict:
    """The notebook's serial loop (load_dataset + extract_face3) over every photo in `tree`."""
    t_import = time.perf_counter()
    import numpy as np
    import tensorflow as tf  # noqa: F401
    from mtcnn import MTCNN
    from PIL import Image

    from faceproc.preprocess.augment import augment_face

    if threads == "1":
        _pin_threads()
    t_load = time.perf_counter()
    detector = MTCNN()
    t_loop = time.perf_counter()
    cpu0 = time.process_time()
    data_x, data_y = [], []
    no_face = failed = 0
    files = source_files(tree)
    for path in files:
        split, person = path.parent.parent.name, path.parent.name
        raw = path.read_bytes()
        image_data = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        results = detector.detect_faces(image_data)
        if not results:  # the notebook would stop with an IndexError here; count and go on
            no_face += 1
            continue
        box_x, box_y, width, height = results[0]["box"]
        box_x, box_y = abs(box_x), abs(box_y)
        face = image_data[box_y:box_y + height, box_x:box_x + width]
        try:
            face_array = np.asarray(Image.fromarray(face).resize((160, 160)))
        except (ValueError, SystemError):
            failed += 1
            continue
        data_x.append(face_array)
        data_y.append(person)
        if split == "train":
            sha = hashlib.sha256(raw).hexdigest()
            for copy in (1, 2):
                data_x.append(augment_face(face_array, 0, sha, copy))
                data_y.append(person)
    loop = time.perf_counter() - t_loop
    cpu = time.process_time() - cpu0
    return {
        "threads": "TF default" if threads == "default" else threads,
        "files": len(files), "rows_in_memory": len(data_x), "no_face": no_face, "crop_failed": failed,
        "import_seconds": round(t_load - t_import, 2), "model_load_seconds": round(t_loop - t_load, 2),
        "loop_seconds": round(loop, 2), "loop_cpu_seconds": round(cpu, 2),
        "photos_per_s": round(len(files) / loop, 2),
        "cpu_cores_used": round(cpu / loop, 2),
    }


def _decoded_base_photos():
    from faceproc.config import PreprocessConfig
    from faceproc.preprocess.decode import decode_image

    cfg = PreprocessConfig()
    return [decode_image(p.read_bytes(), cfg.max_pixels, cfg.min_side) for p in source_files(DATASET)]


def worker_detect(passes: int) -> dict:
    """FaceDetector photos/s on one thread: batches of 8, whole list sorted by size, 1 per call."""
    import dataclasses

    import numpy as np

    _pin_threads()
    from faceproc.config import PreprocessConfig
    from faceproc.preprocess.detector import FaceDetector

    images = _decoded_base_photos()
    config = PreprocessConfig()
    detector = FaceDetector(config)

    def batch(chunk):
        arr = np.empty(len(chunk), dtype=object)
        arr[:] = chunk
        n = len(chunk)
        return {"image": arr, "reason": np.array([""] * n, dtype=object),
                "detail": np.array([""] * n, dtype=object)}

    def one_pass(size: int) -> tuple[float, float, int]:
        t0, c0 = time.perf_counter(), time.process_time()
        no_face = 0
        for start in range(0, len(images), size):
            out = detector(batch(images[start:start + size]))
            no_face += sum(1 for r in out["reason"] if r)
        return time.perf_counter() - t0, time.process_time() - c0, no_face

    detector(batch(images[:DETECT_BATCH]))  # warm-up: tf.function tracing
    runs = [one_pass(DETECT_BATCH) for _ in range(passes)]
    batched_s = sum(r[0] for r in runs)
    batched_cpu = sum(r[1] for r in runs)

    t0, c0 = time.perf_counter(), time.process_time()
    detector.detect_candidates(images)  # the whole list: sorted by size, chunks of 8
    sorted_s, sorted_cpu = time.perf_counter() - t0, time.process_time() - c0

    detector.config = dataclasses.replace(config, detect_batch_size=1)
    single_s, single_cpu, single_no_face = one_pass(1)

    detector.config = config  # mtcnn's numpy hand-over: the baseline of faceproc's TensorBatchStage
    detector._mtcnn.stages[:] = [stage.inner for stage in detector._mtcnn.stages]
    numpy_s, numpy_cpu, _ = one_pass(DETECT_BATCH)
    for stage in detector._mtcnn.stages:  # and mtcnn's own eager networks: mtcnn as shipped
        stage._model = stage.model.python_function
    eager_s, eager_cpu, _ = one_pass(DETECT_BATCH)
    n = len(images)
    return {
        "photos": n, "passes": passes, "no_face_batched": runs[0][2], "no_face_single": single_no_face,
        "batch8_photos_per_s": round(n * passes / batched_s, 2),
        "batch8_pass_photos_per_s": [round(n / r[0], 2) for r in runs],
        "batch8_cpu_cores_used": round(batched_cpu / batched_s, 2),
        "sorted_list_photos_per_s": round(n / sorted_s, 2),
        "sorted_list_cpu_cores_used": round(sorted_cpu / sorted_s, 2),
        "single_photos_per_s": round(n / single_s, 2),
        "single_cpu_cores_used": round(single_cpu / single_s, 2),
        "batch8_numpy_handover_photos_per_s": round(n / numpy_s, 2),
        "batch8_cpu_per_photo_tensor_over_numpy": round((batched_cpu / passes) / numpy_cpu, 3),
        "batch8_eager_photos_per_s": round(n / eager_s, 2),
        "batch8_cpu_per_photo_graph_over_eager": round((batched_cpu / passes) / eager_cpu, 3),
    }


def worker_rayinit() -> dict:
    """What Ray start-up costs a faceproc driver: import and init_ray() on a fresh local Ray."""
    t0 = time.perf_counter()
    import ray

    from faceproc.core.ray_env import init_ray

    t1 = time.perf_counter()
    init_ray(os.environ.get("RAY_ADDRESS"))
    t2 = time.perf_counter()
    ray.shutdown()
    t3 = time.perf_counter()
    return {"import_seconds": round(t1 - t0, 2), "init_seconds": round(t2 - t1, 2),
            "shutdown_seconds": round(t3 - t2, 2)}


# --------------------------------------------------------------------------- faceproc runs


def run_faceproc(tree: Path, out: Path, files: int, ray_address: str, extra: tuple[str, ...] = ()) -> dict:
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    cmd = [str(FACEPROC), "preprocess", "--input", str(tree), "--output", str(out), *extra]
    log = out.parent / f"{out.name}.log"
    run = machine.run_watched(cmd, log, env=env, cwd=ROOT)
    if run.code != 0:
        raise RuntimeError(f"faceproc preprocess failed (exit {run.code}), see {log}:\n"
                           + log.read_text(errors="replace")[-3000:])
    (summary_file,) = sorted((out / "runs").glob("*.preprocess.json"))
    summary = json.loads(summary_file.read_text())
    if summary["processed"] != files:
        raise RuntimeError(f"faceproc processed {summary['processed']} of {files} files")
    return {
        "files": files, "wall_seconds": round(run.wall, 2), "summary_seconds": round(summary["seconds"], 2),
        "photos_per_s_wall": round(files / run.wall, 2),
        "photos_per_s_summary": round(files / summary["seconds"], 2),
        "driver_peak_rss_mb": round(run.peak_rss_kb / 1024, 1),
        **tree_cpu_fields(run), "tree_processes": len(run.polled),
        "detected_in": summary.get("detected_in", ""),
        "face_photos": summary["face_photos"], "face_rows": summary["face_rows"],
        "rejects": summary["rejects"], "rejects_by_reason": summary["rejects_by_reason"],
        "leakage": len(summary["leakage"]), "log": str(log),
    }


# --------------------------------------------------------------------------- main


def versions() -> dict:
    code = ("import importlib.metadata, json, platform, ray, tensorflow as tf, mtcnn, PIL, cv2, pyarrow;"
            "print(json.dumps({'python': platform.python_version(), 'ray': ray.__version__,"
            "'tensorflow': tf.__version__, 'mtcnn': importlib.metadata.version('mtcnn'),"
            "'pillow': PIL.__version__, 'opencv': cv2.__version__, 'pyarrow': pyarrow.__version__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **QUIET_TF})
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(r: dict) -> None:
    fp, base = r["faceproc"], r["baseline"]
    # a run that detects in the driver without a cluster to join starts no Ray (faceproc.core.commit.stage_photos)
    no_ray = fp.get("detected_in", "").startswith("the driver") and r["args"].get("ray_address", "local") == "local"
    ray_start = 0.0 if no_ray else r["ray_startup"]["init_seconds"]
    steady = fp["files"] / max(1e-9, fp["summary_seconds"] - ray_start)
    rows = [
        ("input files (distinct copies)", f"{fp['files']}"),
        ("baseline serial loop, TF default threads", f"{base['photos_per_s']:.2f} photos/s "
         f"(loop {base['loop_seconds']:.0f} s; +{base['import_seconds']:.0f} s imports, "
         f"+{base['model_load_seconds']:.1f} s MTCNN load; {base['cpu_cores_used']:.2f} cores busy)"),
    ]
    if r.get("baseline_1thread"):
        b1 = r["baseline_1thread"]
        rows.append(("baseline serial loop, TF 1 thread", f"{b1['photos_per_s']:.2f} photos/s "
                     f"({b1['files']} files)"))
    rows += [
        ("faceproc, wall clock end to end", f"{fp['photos_per_s_wall']:.2f} photos/s ({fp['wall_seconds']:.0f} s)"),
        ("faceproc, run summary seconds", f"{fp['photos_per_s_summary']:.2f} photos/s ({fp['summary_seconds']:.0f} s, "
                                           "incl. any Ray start-up)"),
        ("faceproc detected in", fp.get("detected_in") or "?"),
        ("faceproc, summary minus Ray start-up", f"{steady:.2f} photos/s (Ray init {ray_start:.1f} s)"),
        ("ratio faceproc/baseline, wall clock", f"{fp['photos_per_s_wall'] / base['photos_per_s']:.2f}x "
                                                 f"(target >= {TARGET_RATIO:g}x)"),
        ("ratio faceproc/baseline, summary", f"{fp['photos_per_s_summary'] / base['photos_per_s']:.2f}x"),
        ("ratio faceproc/baseline, minus start-up", f"{steady / base['photos_per_s']:.2f}x"),
        ("driver peak RSS (this run)", f"{fp['driver_peak_rss_mb']:.0f} MB (baseline process: "
                                        f"{base['peak_rss_mb']:.0f} MB)"),
        ("CPU s/photo, baseline loop", f"{base['loop_cpu_seconds'] / base['files']:.3f} "
                                        f"({base['files'] / base['loop_cpu_seconds']:.1f} photos per CPU s)"),
    ]
    if fp.get("tree_cpu_seconds"):
        rows.append(("CPU s/photo, faceproc (all processes)",
                     f"{fp['tree_cpu_seconds'] / fp['files']:.3f} incl. start-up "
                     f"({fp['tree_cpu_seconds']:.0f} CPU s in {fp['tree_processes']} processes)"))
    if r.get("scale"):
        s1, s10 = r["scale"]["1x"], r["scale"]["10x"]
        marginal = (s10["files"] - s1["files"]) / max(1e-9, s10["summary_seconds"] - s1["summary_seconds"])
        rows += [
            (f"driver peak RSS {s1['files']} vs {s10['files']} files",
             f"{s1['driver_peak_rss_mb']:.0f} MB vs {s10['driver_peak_rss_mb']:.0f} MB "
             f"(ratio {s10['driver_peak_rss_mb'] / s1['driver_peak_rss_mb']:.2f})"),
            ("faceproc marginal rate (10x - 1x)", f"{marginal:.2f} photos/s "
                                                  f"({marginal / base['photos_per_s']:.2f}x baseline)"),
        ]
        if s1.get("tree_cpu_seconds") and s10.get("tree_cpu_seconds"):
            per_photo = (s10["tree_cpu_seconds"] - s1["tree_cpu_seconds"]) / (s10["files"] - s1["files"])
            rows.append(("CPU s/photo, faceproc marginal (10x - 1x)",
                         f"{per_photo:.3f} (bound on {machine.CPUS} idle cores: "
                         f"{machine.CPUS / per_photo:.1f} photos/s)"))
    d = r["detect"]
    rows += [
        ("detection/core, FaceDetector batches of 8", f"{d['batch8_photos_per_s']:.2f} photos/s "
         f"({d['batch8_photos_per_s'] / FACENET_PYTORCH_MTCNN:.2f}x facenet-pytorch's "
         f"{FACENET_PYTORCH_MTCNN}; {d['batch8_cpu_cores_used']:.2f} cores busy)"),
        ("detection/core, batches of 8 per CPU s", f"{d['batch8_photos_per_s'] / d['batch8_cpu_cores_used']:.2f}"
                                                    " photos per CPU second"),
        ("detection/core, whole list sorted by size", f"{d['sorted_list_photos_per_s']:.2f} photos/s "
         f"({d['sorted_list_photos_per_s'] / d['sorted_list_cpu_cores_used']:.2f} per CPU s)"),
        ("detection/core, one photo per call", f"{d['single_photos_per_s']:.2f} photos/s "
         f"({d['single_photos_per_s'] / d['single_cpu_cores_used']:.2f} per CPU s)"),
        ("detection/core, batches of 8, mtcnn's numpy hand-over", f"{d['batch8_numpy_handover_photos_per_s']:.2f} "
         f"photos/s; CPU per photo tensor / numpy: {d['batch8_cpu_per_photo_tensor_over_numpy']:.3f}"),
        ("detection/core, batches of 8, mtcnn as shipped", f"{d['batch8_eager_photos_per_s']:.2f} photos/s; "
         f"CPU per photo faceproc / shipped: {d['batch8_cpu_per_photo_graph_over_eager']:.3f}"),
    ]
    ratio = fp["photos_per_s_wall"] / base["photos_per_s"]
    rows.append(("verdict: faceproc >= 3x baseline (wall)", "yes" if ratio >= TARGET_RATIO else f"NO ({ratio:.2f}x)"))
    if r.get("scale"):
        growth = r["scale"]["10x"]["driver_peak_rss_mb"] / r["scale"]["1x"]["driver_peak_rss_mb"]
        rows.append((f"verdict: driver RSS flat (10x/1x <= {FLAT_RSS_RATIO})",
                     "yes" if growth <= FLAT_RSS_RATIO else f"NO ({growth:.2f})"))
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value}" for name, value in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=9, help="copies of the 118 photos (default 9: 1062 files)")
    parser.add_argument("--scale-check", action="store_true",
                        help="also run faceproc on --scale-base copies and 10x that, for the driver-memory check")
    parser.add_argument("--scale-base", type=int, default=1, help="copies for the 1x scale run (default 1: 118 files)")
    parser.add_argument("--baseline-1thread-copies", type=int, default=1,
                        help="copies for the baseline with TF on 1 thread (0: skip; default 1: 118 files)")
    parser.add_argument("--detect-passes", type=int, default=2, help="timed passes over the 118 photos")
    parser.add_argument("--out", help="work folder under /tmp (default: a new temp dir)")
    parser.add_argument("--ray-address", default="local",
                        help="RAY_ADDRESS for the faceproc runs (default: local, a fresh Ray each run)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "baseline":
            out = worker_baseline(Path(args.tree), args.threads)
        elif args.worker == "detect":
            out = worker_detect(args.detect_passes)
        elif args.worker == "rayinit":
            out = worker_rayinit()
        else:
            parser.error(f"unknown worker {args.worker}")
        Path(args.result).write_text(json.dumps(out))
        return 0

    if args.copies < 1:
        parser.error("--copies must be >= 1")
    work = Path(args.out or tempfile.mkdtemp(prefix="faceproc-bench-", dir="/tmp")).resolve()
    if not str(work).startswith("/tmp/"):
        parser.error("--out must be under /tmp")
    work.mkdir(parents=True, exist_ok=True)
    if not source_files(DATASET):
        parser.error(f"no photos under {DATASET}; run `faceproc fetch-data` first")

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": machine.CPUS,
                     "uptime_start": machine.uptime(),
                     "versions": versions(), "args": {k: v for k, v in vars(args).items() if v is not None},
                     "phases": {}}
    print(f"work folder {work}\nversions {results['versions']}\n{results['uptime_start']}", flush=True)

    tree = work / f"input-x{args.copies}"
    files = build_tree(tree, args.copies)
    check_same_pixels(tree)
    print(f"input tree {tree}: {files} distinct files", flush=True)

    with Phase("ray start-up probe") as phase:
        results["ray_startup"] = worker("rayinit", work / "rayinit.json",
                                         env={"RAY_ADDRESS": args.ray_address})
        phase.own_cpu = results["ray_startup"]["tree_cpu_seconds"]
    results["phases"]["ray_startup"] = phase.to_dict()

    with Phase(f"faceproc preprocess, {files} files") as phase:
        results["faceproc"] = run_faceproc(tree, work / f"faceproc-x{args.copies}", files, args.ray_address)
        phase.own_cpu = results["faceproc"]["tree_cpu_seconds"]
    results["phases"]["faceproc"] = phase.to_dict()

    with Phase(f"baseline serial loop (TF default threads), {files} files") as phase:
        results["baseline"] = worker("baseline", work / "baseline.json", "--tree", str(tree))
        phase.own_cpu = results["baseline"]["tree_cpu_seconds"]
    results["phases"]["baseline"] = phase.to_dict()

    if args.baseline_1thread_copies:
        small = work / f"input-x{args.baseline_1thread_copies}"
        n_small = build_tree(small, args.baseline_1thread_copies)
        with Phase(f"baseline serial loop (TF 1 thread), {n_small} files") as phase:
            results["baseline_1thread"] = worker("baseline", work / "baseline-1thread.json",
                                                 "--tree", str(small), "--threads", "1")
            phase.own_cpu = results["baseline_1thread"]["tree_cpu_seconds"]
        results["phases"]["baseline_1thread"] = phase.to_dict()

    with Phase("detection per core (FaceDetector, 1 thread)") as phase:
        results["detect"] = worker("detect", work / "detect.json", "--detect-passes", str(args.detect_passes))
        phase.own_cpu = results["detect"]["tree_cpu_seconds"]
    results["phases"]["detect"] = phase.to_dict()

    if args.scale_check:
        results["scale"] = {}
        for label, copies in (("1x", args.scale_base), ("10x", 10 * args.scale_base)):
            scale_tree = work / f"input-x{copies}"
            n = build_tree(scale_tree, copies)
            with Phase(f"faceproc preprocess scale {label}, {n} files") as phase:
                results["scale"][label] = run_faceproc(scale_tree, work / f"faceproc-x{copies}", n, args.ray_address,
                                                       ("--set", "preprocess.driver_max_photos=0"))
                phase.own_cpu = results["scale"][label]["tree_cpu_seconds"]
            results["phases"][f"scale_{label}"] = phase.to_dict()

    results["uptime_end"] = machine.uptime()
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\n{results['uptime_end']}\nfull results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
