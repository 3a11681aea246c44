#!/usr/bin/env python
"""Training throughput: faceproc's Ray Train path against plain `model.fit` on in-memory arrays.

On the same face rows (the 5 Celebrity Faces dataset preprocessed once by `faceproc preprocess`),
same machine, same invocation:

1. For each of --models (default `cnn,resnet50`):
   a. Baseline, in its own process (fresh TensorFlow threads, no Ray): the fitting rows of the train
      split (the same early-stopping holdout split faceproc makes: `select_holdout` with the default
      fraction and seed, holdout rows left out) read with pyarrow and decoded into one float32 array;
      the model built from the registry (`resolve_spec(name).make(classes, BuildContext())`),
      compiled with the spec's optimizer and faceproc's loss and metric, then
      `model.fit(x, y, batch_size=spec.batch_size, epochs=E)`, each epoch timed by a callback.
      Its "end to end" runs from reading the rows to the end of the last epoch (an idle tail that
      `fit` sometimes has after it is reported apart as fit_tail_seconds).
   b. faceproc, in its own process with its own local Ray, for each of --workers (default 2 then 1):
      `run_train(config, force=True)` with models=[name] and epochs=E, everything else default.
      "End to end" is the run's own `train_seconds` (result.json: Ray Train start-up, every epoch,
      final checkpoint and model save). "Steady state" excludes the first epoch; per-epoch times come
      from timestamps taken inside the Ray Train workers: the benchmark hands Ray Train a thin
      wrapper around `faceproc.train.loop.train_func` that records when each `ray.train.report`
      (one per epoch, after fit + holdout evaluation + checkpoint) and each `Model.fit` /
      `Model.evaluate` call starts and ends, and the optimizer's step count. The driver's phases
      (trainer, model save, embeddings) are timed the same way. faceproc's code is not changed;
      the wrappers only read clocks.
   images/s = fitting rows x epochs / seconds; ratio = faceproc / baseline (target >= 0.8).
2. FaceNet (--facenet, on by default): `run_train` with models=["facenet"] and all defaults (frozen
   mode: one backbone pass to embed the faces, cached, then 60 head epochs), first with no embedding
   cache (as a first run would), then again with the cache warm; against `train.facenet_mode=finetune`
   timed over --finetune-epochs epochs and extrapolated to the notebook's 50 epochs (and faceproc's
   finetune default of 10): train_seconds of the short run + (N - timed epochs) x steady epoch.

Every run gets a fresh local Ray (RAY_ADDRESS=local). Other jobs on a shared machine skew the
numbers: the load average and the cores other processes took during each run are printed with it.

    .venv/bin/python bench/train_throughput.py [--models cnn,resnet50] [--workers 2,1] [--out /tmp/DIR]

Results: a table on stdout and OUT/results.json. Write-up: docs/benchmarks.md, "Training".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "5-celebrity-faces-dataset"
FACEPROC = Path(sys.executable).parent / "faceproc"
TARGET_RATIO = 0.8
NOTEBOOK_FACENET_EPOCHS = 50
DEFAULT_EPOCHS = {"cnn": 8, "resnet50": 5, "resnet50_imagenet": 5}  # 4+ steady epochs: one alone varied ~10%
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1",
            "PYTHONWARNINGS": "ignore::DeprecationWarning", "RAY_ADDRESS": "local"}


# --------------------------------------------------------------------------- child processes


def run_child(mode: str, work: Path, tag: str, *args: str) -> dict:
    """This script in `mode` in a fresh process; its JSON result plus wall time, the CPU seconds of
    its process tree (driver, raylet, GCS, Ray workers), the machine's busy cores and the cores
    other processes took meanwhile."""
    result = work / f"{tag}.json"
    log_path = work / f"{tag}.log"
    env = {**os.environ, **QUIET_TF}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--result", str(result), *args]
    before = machine.snapshot()
    print(f"[{time.strftime('%H:%M:%S')}] {tag} (load {before.load}) ...", flush=True)
    run = machine.run_watched(cmd, log_path, env=env, cwd=ROOT)
    after = machine.snapshot()
    busy_cores = machine.busy_cores(before, after)
    wall, tree_cpu = run.wall, run.tree_cpu
    if run.code != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{tag} failed (exit {run.code}), log {log_path}:\n{tail}")
    out = json.loads(result.read_text())
    out["process"] = {"wall_seconds": round(wall, 1), "tree_cpu_seconds": round(tree_cpu, 1),
                      "tree_cores": round(tree_cpu / wall, 2), "machine_busy_cores": round(busy_cores, 2),
                      "other_jobs_cores": round(machine.other_cores(busy_cores, tree_cpu, wall), 2),
                      "load_before": before.load, "load_after": after.load, "log": str(log_path)}
    p = out["process"]
    print(f"[{time.strftime('%H:%M:%S')}] {tag}: {wall:.0f} s, own {p['tree_cores']:.2f} cores, "
          f"machine busy {busy_cores:.2f} of {machine.CPUS} (other jobs ~{p['other_jobs_cores']:.2f}), "
          f"load {p['load_after']}", flush=True)
    return out


# --------------------------------------------------------------------------- baseline (subprocess)


def read_fit_rows(out: str, holdout_fraction: float, seed: int):
    """The rows faceproc fits on, without Ray: live train shard rows minus the held-out photos."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from faceproc.core import storage
    from faceproc.core.images import decode_png
    from faceproc.core.manifest import load_manifest
    from faceproc.core.shards import live_key_array, live_shard_files
    from faceproc.train.data import select_holdout

    manifest = load_manifest(out)
    ok = manifest.filter(pc.and_(pc.equal(manifest.column("status"), "ok"),
                                 pc.equal(manifest.column("split"), "train")))
    photos = list(zip(ok.column("path").to_pylist(), ok.column("label").to_pylist()))
    classes = sorted({label for _, label in photos})
    held = select_holdout(photos, holdout_fraction, seed)
    keys = set(live_key_array(manifest).to_pylist())
    images, labels = [], []
    index = {name: i for i, name in enumerate(classes)}
    for uri in live_shard_files(out, "train", manifest):
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs, columns=["image", "label", "source_path", "source_sha256"])
        for row in table.to_pylist():
            if f"{row['source_path']}\0{row['source_sha256']}" not in keys or row["source_path"] in held:
                continue
            images.append(decode_png(row["image"]))
            labels.append(index[row["label"]])
    x = np.stack(images).astype(np.float32)
    y = np.array(labels, np.int32)
    return x, y, classes, len(held)


def worker_baseline(out: str, name: str, epochs: int) -> dict:
    t0 = time.perf_counter()
    from faceproc.config import TrainConfig
    from faceproc.models.keras_env import keras, tf
    from faceproc.models.registry import BuildContext, resolve_spec

    t_import = time.perf_counter()
    train = TrainConfig()
    x, y, classes, held_photos = read_fit_rows(out, train.holdout_fraction, train.seed)
    t_data = time.perf_counter()
    keras.utils.set_random_seed(train.seed)
    spec = resolve_spec(name, TrainConfig(epochs=epochs))
    model = spec.make(len(classes), BuildContext(models_dir=str(ROOT / "models")))
    model.compile(optimizer=spec.make_optimizer(10), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t_build = time.perf_counter()

    times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.end = time.perf_counter()
            times.append(self.end - self.start)

    cpu0 = time.process_time()
    timer = EpochTimer()
    history = model.fit(x, y, batch_size=spec.batch_size, epochs=spec.epochs, shuffle=True, verbose=0,
                        callbacks=[timer])
    t_fit = time.perf_counter()
    fit_cpu = time.process_time() - cpu0
    steps = int(model.optimizer.iterations.numpy())
    rows = int(len(x))
    steady = times[1:]
    return {
        "model": name, "epochs": spec.epochs, "batch_size": spec.batch_size, "rows": rows,
        "classes": classes, "held_photos": held_photos, "steps_total": steps,
        "tf_threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter": tf.config.threading.get_inter_op_parallelism_threads()},
        "import_seconds": round(t_import - t0, 2), "read_decode_seconds": round(t_data - t_import, 2),
        "build_compile_seconds": round(t_build - t_data, 2), "fit_seconds": round(t_fit - t_build, 2),
        "fit_cores_used": round(fit_cpu / (t_fit - t_build), 2),
        "epoch_seconds": [round(t, 2) for t in times],
        # After its last epoch `fit` sometimes sat idle for up to ~40 s (tf.data's autotuner winding
        # down, the stall faceproc's pipelines avoid); counting it would flatter faceproc.
        "fit_tail_seconds": round(t_fit - timer.end, 2),
        "end_to_end_seconds": round(timer.end - t_import, 2),  # read+decode, build, compile, epochs
        "steady_epoch_seconds": round(sum(steady) / len(steady), 3) if steady else None,
        "steady_images_per_s": round(rows * len(steady) / sum(steady), 2) if steady else None,
        "end_to_end_images_per_s": round(rows * spec.epochs / (timer.end - t_import), 2),
        "final_loss": float(history.history["loss"][-1]),
    }


# --------------------------------------------------------------------------- faceproc (subprocess)


def make_timed_train_func(events_dir: str):
    """faceproc's train_func, unchanged, with clocks read around report/fit/evaluate (per worker)."""

    def timed_train_func(config):
        import json as _json
        import os as _os
        import time as _time

        import ray.train

        import faceproc.train.loop as loop
        from faceproc.models.keras_env import keras

        rank = ray.train.get_context().get_world_rank()
        path = _os.path.join(events_dir, f"rank{rank}.jsonl")

        def mark(kind, **fields):
            with open(path, "a") as stream:
                stream.write(_json.dumps({"t": _time.time(), "kind": kind, **fields}) + "\n")

        def steps_of(model):
            try:
                return int(model.optimizer.iterations.numpy())
            except Exception:  # noqa: BLE001 - a clock, not a check
                return None

        original_report, original_fit, original_evaluate = ray.train.report, keras.Model.fit, keras.Model.evaluate

        def report(metrics, *args, **kwargs):
            mark("report_start", epoch=metrics.get("epoch"))
            out = original_report(metrics, *args, **kwargs)
            mark("report_end", epoch=metrics.get("epoch"))
            return out

        def fit(self, *args, **kwargs):
            before = steps_of(self)
            mark("fit_start")
            out = original_fit(self, *args, **kwargs)
            after = steps_of(self)
            mark("fit_end", steps=None if before is None or after is None else after - before)
            return out

        def evaluate(self, *args, **kwargs):
            mark("evaluate_start")
            out = original_evaluate(self, *args, **kwargs)
            mark("evaluate_end")
            return out

        mark("enter", pid=_os.getpid())
        ray.train.report, keras.Model.fit, keras.Model.evaluate = report, fit, evaluate
        try:
            loop.train_func(config)
        finally:
            ray.train.report, keras.Model.fit, keras.Model.evaluate = original_report, original_fit, original_evaluate
            mark("exit")

    return timed_train_func


def _time_calls(module, name: str, phases: list[dict]) -> None:
    """Replace module.name by a wrapper that appends {phase, start, end} to `phases`."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            phases.append({"phase": name, "start": start, "end": time.time()})

    setattr(module, name, wrapper)


def _read_events(events_dir: Path) -> dict[int, list[dict]]:
    events = {}
    for path in sorted(events_dir.glob("rank*.jsonl")):
        rank = int(path.stem[4:])
        events[rank] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return events


def _epochs_from_events(events: list[dict]) -> dict:
    """Per-epoch wall times and their parts for one worker."""
    enter = [e["t"] for e in events if e["kind"] == "enter"]
    first_fit = next(e["t"] for e in events if e["kind"] == "fit_start")
    ends = [e["t"] for e in events if e["kind"] == "report_end"]
    fits = list(zip([e for e in events if e["kind"] == "fit_start"], [e for e in events if e["kind"] == "fit_end"]))
    evals = list(zip([e["t"] for e in events if e["kind"] == "evaluate_start"],
                     [e["t"] for e in events if e["kind"] == "evaluate_end"]))
    reports = list(zip([e["t"] for e in events if e["kind"] == "report_start"], ends))
    starts = [first_fit] + ends[:-1]
    epochs = []
    for i, end in enumerate(ends):
        fit_s = fits[i][1]["t"] - fits[i][0]["t"]
        eval_s = evals[i][1] - evals[i][0] if i < len(evals) else 0.0
        report_s = reports[i][1] - reports[i][0]
        total = end - starts[i]
        epochs.append({"seconds": round(total, 3), "fit": round(fit_s, 3), "evaluate": round(eval_s, 3),
                       "report_checkpoint": round(report_s, 3),
                       "other": round(total - fit_s - eval_s - report_s, 3), "steps": fits[i][1].get("steps")})
    return {"enter": enter[-1], "restarts": len(enter) - 1, "first_fit": first_fit,
            "last_report_end": ends[-1] if ends else None,
            "setup_seconds": round(first_fit - enter[-1], 2), "epochs": epochs}


def worker_faceproc(out: str, name: str, epochs: int | None, workers: int, facenet_mode: str,
                    clear_embeddings: bool) -> dict:
    t0 = time.perf_counter()
    import ray

    import faceproc.inference.artifact as artifact
    import faceproc.models.facenet_weights as facenet_weights
    import faceproc.train.run as ftrain
    import faceproc.train.trainer as trainer_module
    from faceproc.config import Config
    from faceproc.core.ray_env import init_ray

    t_import = time.perf_counter()
    if clear_embeddings:
        shutil.rmtree(Path(out) / "embeddings", ignore_errors=True)
    init_ray(os.environ.get("RAY_ADDRESS"))
    t_init = time.perf_counter()

    config = Config(input=str(DATASET), output=out, models_dir=str(ROOT / "models"))
    config.train.models = [name]
    config.train.workers = workers
    config.train.facenet_mode = facenet_mode
    if epochs:
        config.train.model_epochs = {name: epochs}

    phases: list[dict] = []
    for attr in ("load_training_data", "embedding_datasets", "fit_with_ray_train", "train_centroids"):
        _time_calls(ftrain, attr, phases)
    _time_calls(artifact, "_save_keras", phases)
    _time_calls(facenet_weights, "load_facenet_backbone", phases)
    events_dir = Path(tempfile.mkdtemp(prefix="fpbench-events-"))
    trainer_module.train_func = make_timed_train_func(str(events_dir))
    where = ftrain.placement(config)

    started = time.time()
    (result,) = ftrain.run_train(config, force=True)
    ended = time.time()
    if result["status"] != "ok":
        raise RuntimeError(f"{name}: {result['status']}: {result['reason']}")

    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    python_workers = len(list(logs.glob("python-core-worker-*.log")))
    data_executions = len(list(logs.glob("ray-data/ray-data-*_*.log")))
    data = ftrain.load_training_data(out, config.train.holdout_fraction, config.train.seed)
    fit_rows, holdout_rows = data.fit_rows, data.holdout_photos  # the holdout: one original row per photo
    ray.shutdown()

    events = _read_events(events_dir)
    shutil.rmtree(events_dir, ignore_errors=True)
    per_rank = {rank: _epochs_from_events(ev) for rank, ev in events.items()}
    rank0 = per_rank[0]
    trainer = next(p for p in phases if p["phase"] == "fit_with_ray_train")
    epoch_list = rank0["epochs"]
    steady = epoch_list[1:]
    n_epochs = len(epoch_list)

    def mean(key: str, items: list[dict]) -> float | None:
        return round(sum(e[key] for e in items) / len(items), 3) if items else None

    before_train_model = ("load_training_data",)  # run_train's, outside train_seconds
    seconds_by_phase: dict[str, float] = {}
    for p in phases:
        if p["phase"] in before_train_model and p["start"] > ended:
            continue  # the count above, not part of the run
        seconds_by_phase[p["phase"]] = round(seconds_by_phase.get(p["phase"], 0.0) + p["end"] - p["start"], 2)
    known = sum(v for k, v in seconds_by_phase.items() if k not in before_train_model)
    train_start = next(p["end"] for p in phases if p["phase"] == "load_training_data")  # train_model starts
    return {
        "model": name, "workers": workers, "facenet_mode": facenet_mode if name == "facenet" else None,
        "placement": {"cpus_per_worker": where.cpus_per_worker, "use_gpu": where.use_gpu},
        "fit_rows": fit_rows, "holdout_rows": holdout_rows,
        "epochs_requested": result.get("epochs"), "epochs_run": result.get("epochs_run"),
        "batch_size": result.get("batch_size"), "learning_rate": result.get("learning_rate"),
        "import_seconds": round(t_import - t0, 2), "ray_init_seconds": round(t_init - t_import, 2),
        "run_train_wall_seconds": round(ended - started, 2),
        "train_seconds": result["train_seconds"],
        "driver_phases_seconds": seconds_by_phase,
        "driver_other_seconds": round(result["train_seconds"] - known, 2),
        "driver_phases": [{"phase": p["phase"], "start": round(p["start"] - started, 2),
                           "end": round(p["end"] - started, 2)} for p in phases if p["start"] <= ended],
        "driver_before_trainer_seconds": round(trainer["start"] - train_start, 2),
        "driver_after_trainer_seconds": round(ended - trainer["end"], 2),
        "ray_python_workers_started": python_workers,  # worker log files in the Ray session
        "ray_data_executions": data_executions,  # one log file per Dataset execution

        "trainer_seconds": round(trainer["end"] - trainer["start"], 2),
        "trainer_startup_seconds": round(min(r["enter"] for r in per_rank.values()) - trainer["start"], 2),
        "worker_setup_seconds": rank0["setup_seconds"],  # MWMS strategy, model build+compile, to the first fit
        "trainer_teardown_seconds": round(trainer["end"] - rank0["last_report_end"], 2),
        "worker_restarts": max(r["restarts"] for r in per_rank.values()),
        "epochs": epoch_list,
        "epochs_by_rank": {str(k): v["epochs"] for k, v in per_rank.items()},
        "first_epoch_seconds": epoch_list[0]["seconds"],
        "steady_epoch_seconds": mean("seconds", steady),
        "steady_parts": {k: mean(k, steady) for k in ("fit", "evaluate", "report_checkpoint", "other")},
        "steady_images_per_s": round(fit_rows * len(steady) / sum(e["seconds"] for e in steady), 2) if steady else None,
        "steady_fit_only_images_per_s": round(fit_rows * len(steady) / sum(e["fit"] for e in steady), 2) if steady else None,
        "end_to_end_images_per_s": round(fit_rows * n_epochs / result["train_seconds"], 2),
    }


# --------------------------------------------------------------------------- report


def versions() -> dict:
    code = ("import faceproc, json, platform, ray, tensorflow as tf, tf_keras;"
            "print(json.dumps({'python': platform.python_version(), 'ray': ray.__version__,"
            "'tensorflow': tf.__version__, 'tf_keras': tf_keras.__version__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **QUIET_TF})
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(value, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def cpu_per_image(run: dict, epochs: int) -> str:
    rows = run.get("rows", run.get("fit_rows"))
    return f"{run['process']['tree_cpu_seconds'] / (rows * epochs):.3f}"


def cores(run: dict) -> str:
    return f"{run['process']['tree_cores']:.2f} / {run['process']['other_jobs_cores']:.2f}"


def print_tables(r: dict) -> str:
    lines = ["", "### Throughput: faceproc (Ray Train) vs plain model.fit", "",
             "| model | path | epochs | fit rows | first epoch s | steady s/epoch | steady img/s | "
             "steady img/s, fit() only | end-to-end s | end-to-end img/s | ratio steady | ratio end-to-end | "
             "CPU s per image (whole process tree) | own / other jobs' cores |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        b = m["baseline"]
        lines.append(f"| {name} | plain model.fit, in memory, 1 process | {b['epochs']} | {b['rows']} | "
                     f"{b['epoch_seconds'][0]:.1f} | {fmt(b['steady_epoch_seconds'], 2)} | "
                     f"{fmt(b['steady_images_per_s'])} | {fmt(b['steady_images_per_s'])} | {b['end_to_end_seconds']:.1f} | "
                     f"{b['end_to_end_images_per_s']:.1f} | 1 | 1 | {cpu_per_image(b, b['epochs'])} | "
                     f"{cores(b)} |")
        for f in m["faceproc"]:
            rs = (f["steady_images_per_s"] / b["steady_images_per_s"]
                  if f["steady_images_per_s"] and b["steady_images_per_s"] else None)
            re = f["end_to_end_images_per_s"] / b["end_to_end_images_per_s"]
            mark = lambda x: "-" if x is None else (f"**{x:.2f}**" if x >= TARGET_RATIO else f"**{x:.2f}** (miss)")
            lines.append(f"| {name} | faceproc run_train, workers={f['workers']} | {f['epochs_run']} | "
                         f"{f['fit_rows']} | {f['first_epoch_seconds']:.1f} | {fmt(f['steady_epoch_seconds'], 2)} | "
                         f"{fmt(f['steady_images_per_s'])} | {fmt(f['steady_fit_only_images_per_s'])} | "
                         f"{f['train_seconds']:.1f} | "
                         f"{f['end_to_end_images_per_s']:.1f} | {mark(rs)} | {mark(re)} | "
                         f"{cpu_per_image(f, f['epochs_run'])} | {cores(f)} |")
    lines += ["", "### Where faceproc's time goes (seconds)", "",
              "| run | Ray init (not in train_seconds) | driver before trainer | Ray Train start-up (trainer() to "
              "train_func) | worker setup (strategy, build, compile) | first epoch | steady epoch: fit / holdout "
              "eval / report+checkpoint / other | steps per epoch per worker | trainer teardown | driver after "
              "trainer (best weights, save) | Ray workers started / Dataset executions |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = [f for m in r["models"].values() for f in m["faceproc"]] + list(r.get("facenet", {}).get("runs", {}).values())
    for f in runs:
        p = f["steady_parts"]
        phase = f["driver_phases_seconds"]
        if "driver_before_trainer_seconds" in f:
            driver_before, after = f["driver_before_trainer_seconds"], f["driver_after_trainer_seconds"]
        else:  # results of an older version of this script: only per-phase sums
            driver_before = round(f["train_seconds"] - f["trainer_seconds"] - phase.get("_save_keras", 0)
                                  - phase.get("train_centroids", 0), 1)
            after = round(f["train_seconds"] - f["trainer_seconds"] - driver_before, 1)
        label = f"{f['model']}{'/' + f['facenet_mode'] if f['facenet_mode'] else ''} w={f['workers']}"
        steps = sorted({e["steps"] for e in f["epochs"] if e["steps"] is not None})
        parts = [f"{what} {phase[key]:.1f}" for key, what in (("embedding_datasets", "embeddings"),
                                                              ("load_facenet_backbone", "FaceNet loads"))
                 if phase.get(key)]
        emb = f" (incl. {', '.join(parts)})" if parts else ""
        lines.append(f"| {label} | {f['ray_init_seconds']:.1f} | {driver_before:.1f}{emb} | "
                     f"{f['trainer_startup_seconds']:.1f} | {f['worker_setup_seconds']:.1f} | "
                     f"{f['first_epoch_seconds']:.1f} | {fmt(f['steady_epoch_seconds'], 2)}: {fmt(p['fit'], 2)} / "
                     f"{fmt(p['evaluate'], 2)} / {fmt(p['report_checkpoint'], 2)} / {fmt(p['other'], 2)} | "
                     f"{','.join(map(str, steps))} | {f['trainer_teardown_seconds']:.1f} | {after:.1f} | "
                     f"{f.get('ray_python_workers_started', '-')} / {f.get('ray_data_executions', '-')} |")
    if r.get("facenet"):
        fn = r["facenet"]
        lines += ["", "### FaceNet: default (frozen) against fine-tuning", "",
                  "| run | epochs | wall (train_seconds) | notes |", "|---|---|---|---|"]
        for key, f in fn["runs"].items():
            if key.startswith("frozen"):
                emb = f["driver_phases_seconds"].get("embedding_datasets", 0)
                lines.append(f"| frozen ({'no embedding cache' if key == 'frozen_cold' else 'embeddings cached'}) | "
                             f"{f['epochs_run']} head epochs | **{f['train_seconds']:.1f} s** | embeddings "
                             f"{emb:.1f} s, head epochs {fmt(f['steady_epoch_seconds'], 2)} s each |")
        ft = fn["runs"]["finetune"]
        lines.append(f"| finetune, timed | {ft['epochs_run']} | {ft['train_seconds']:.1f} s | first epoch "
                     f"{ft['first_epoch_seconds']:.1f} s, steady {fmt(ft['steady_epoch_seconds'], 1)} s/epoch "
                     f"({fmt(ft['steady_images_per_s'], 2)} img/s) |")
        for n, secs in fn["finetune_extrapolated"].items():
            lines.append(f"| finetune, **extrapolated** to {n} epochs | {n} | **{secs:.0f} s** ({secs / 60:.1f} min) | "
                         f"= {ft['train_seconds']:.1f} + ({n} - {ft['epochs_run']}) x {ft['steady_epoch_seconds']:.1f} |")
        lines.append(f"| ratio finetune {NOTEBOOK_FACENET_EPOCHS} epochs / frozen (cold) | | "
                     f"**{fn['ratio_finetune50_over_frozen_cold']:.0f}x** | warm cache: "
                     f"{fn['ratio_finetune50_over_frozen_warm']:.0f}x |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,resnet50", help="models to compare (default cnn,resnet50)")
    parser.add_argument("--epochs-cnn", type=int, default=DEFAULT_EPOCHS["cnn"])
    parser.add_argument("--epochs-resnet50", type=int, default=DEFAULT_EPOCHS["resnet50"])
    parser.add_argument("--workers", default="2,1", help="faceproc worker counts, one run each (default 2,1)")
    parser.add_argument("--facenet", action=argparse.BooleanOptionalAction, default=True,
                        help="also time FaceNet frozen vs finetune (default on)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="timed finetune epochs (>= 2)")
    parser.add_argument("--finetune-workers", type=int, default=2)
    parser.add_argument("--out", help="work folder (default: a new dir under /tmp)")
    parser.add_argument("--reuse-out", action="store_true", help="skip preprocessing when OUT already has shards")
    parser.add_argument("--report", metavar="RESULTS_JSON", help="only print the tables of an earlier run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nworkers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--facenet-mode", default="frozen", help=argparse.SUPPRESS)
    parser.add_argument("--clear-embeddings", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "baseline":
            result = worker_baseline(args.output, args.model, args.epochs)
        elif args.worker == "faceproc":
            result = worker_faceproc(args.output, args.model, args.epochs, args.nworkers, args.facenet_mode,
                                     args.clear_embeddings)
        else:
            parser.error(f"unknown worker {args.worker}")
        Path(args.result).write_text(json.dumps(result, indent=1))
        return 0

    if args.report:
        print_tables(json.loads(Path(args.report).read_text()))
        return 0
    if args.finetune_epochs < 2:
        parser.error("--finetune-epochs must be at least 2 (the first epoch is not steady state)")
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fpbench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    epochs_for = {"cnn": args.epochs_cnn, "resnet50": args.epochs_resnet50, "resnet50_imagenet": args.epochs_resnet50}
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]

    r: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_start": machine.loadavg(),
               "uptime_start": machine.uptime(),
               "command": " ".join([".venv/bin/python", "bench/train_throughput.py", *(argv or sys.argv[1:])]),
               "versions": versions(), "cpus": machine.CPUS, "models": {}}
    print(f"work folder {work}; {r['uptime_start']}", flush=True)

    if not (args.reuse_out and (out / "manifest.parquet").exists()):
        shutil.rmtree(out, ignore_errors=True)
        t = time.monotonic()
        subprocess.run([str(FACEPROC), "preprocess", "--input", str(DATASET), "--output", str(out)],
                       check=True, cwd=ROOT, env={**os.environ, **QUIET_TF},
                       stdout=open(work / "preprocess.log", "wb"), stderr=subprocess.STDOUT)
        r["preprocess_seconds"] = round(time.monotonic() - t, 1)
        print(f"preprocessed into {out} in {r['preprocess_seconds']} s", flush=True)

    for name in names:
        epochs = epochs_for.get(name, 2)
        base = run_child("baseline", work, f"{name}-baseline", "--output", str(out), "--model", name,
                         "--epochs", str(epochs))
        runs = []
        for w in worker_counts:
            runs.append(run_child("faceproc", work, f"{name}-faceproc-w{w}", "--output", str(out), "--model", name,
                                  "--epochs", str(epochs), "--nworkers", str(w)))
            if runs[-1]["fit_rows"] != base["rows"]:
                print(f"WARNING: faceproc fit rows {runs[-1]['fit_rows']} != baseline rows {base['rows']}")
        r["models"][name] = {"baseline": base, "faceproc": runs}
        (work / "results.json").write_text(json.dumps(r, indent=1))

    if args.facenet:
        fn_runs = {
            "frozen_cold": run_child("faceproc", work, "facenet-frozen-cold", "--output", str(out), "--model", "facenet",
                                     "--nworkers", "2", "--clear-embeddings"),
            "frozen_warm": run_child("faceproc", work, "facenet-frozen-warm", "--output", str(out), "--model", "facenet",
                                     "--nworkers", "2"),
            "finetune": run_child("faceproc", work, "facenet-finetune", "--output", str(out), "--model", "facenet",
                                  "--facenet-mode", "finetune", "--epochs", str(args.finetune_epochs),
                                  "--nworkers", str(args.finetune_workers)),
        }
        ft = fn_runs["finetune"]
        extrapolated = {n: round(ft["train_seconds"] + (n - ft["epochs_run"]) * ft["steady_epoch_seconds"], 1)
                        for n in (10, NOTEBOOK_FACENET_EPOCHS)}
        r["facenet"] = {
            "runs": fn_runs, "finetune_extrapolated": extrapolated,
            "extrapolation": f"train_seconds of the {ft['epochs_run']}-epoch finetune run + (N - {ft['epochs_run']}) "
                             "x mean steady epoch (epochs after the first); assumes no early stop",
            "ratio_finetune50_over_frozen_cold": round(extrapolated[NOTEBOOK_FACENET_EPOCHS]
                                                       / fn_runs["frozen_cold"]["train_seconds"], 1),
            "ratio_finetune50_over_frozen_warm": round(extrapolated[NOTEBOOK_FACENET_EPOCHS]
                                                       / fn_runs["frozen_warm"]["train_seconds"], 1),
        }

    r["load_end"] = machine.loadavg()
    r["uptime_end"] = machine.uptime()
    r["tables_markdown"] = print_tables(r)
    print(f"\nuptime before: {r['uptime_start']}\nuptime after:  {r['uptime_end']}")
    (work / "results.json").write_text(json.dumps(r, indent=1))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
