#!/usr/bin/env python
"""Detection in the driver against the Ray Data actor pool, on the same photos, alternated.

`preprocess.driver_max_photos` decides where a one-node run without detector GPUs detects its faces:
at most that many photos to read go through `FacePipeline` in the driver, more through the actor pool
(`preprocess.detector_actors` actors, each starting a process, importing TensorFlow and building
MTCNN first). This runs `faceproc preprocess` on --copies x 118 distinct files (the dataset replicated
as `preprocess_throughput.py` does), once with `driver_max_photos=0` (the pool), once with it above
the file count (the driver, a batch per core at a time) and once more so with `driver_threads=1`,
--repeats times each, alternated so that a drift in the machine's speed hits all; every run has a
fresh output, and the pool's its own local Ray (a run in the driver starts none).

    .venv/bin/python bench/driver_or_pool.py [--copies 1,6] [--repeats 2] [--out /tmp/DIR]

Prints per size the median wall seconds of each, the ratios driver / pool and one thread / a thread
per core, and the driver's peak RSS; each run's line gives the cores other jobs took meanwhile.
Results: DIR/results.json. Write-up: docs/benchmarks.md, "Preprocessing" ("In the driver or in the
pool").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)
import preprocess_throughput as throughput  # noqa: E402  (the replicated tree and the timed faceproc run)

PLACES = {  # preprocess settings of each place
    "pool": {"driver_max_photos": "0"},
    "driver": {"driver_max_photos": "1000000"},
    "driver-1-thread": {"driver_max_photos": "1000000", "driver_threads": "1"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,6", help="dataset copies per size, comma-separated (default 1,6)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each place per size (default 2)")
    parser.add_argument("--out", help="work folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="fp-driver-or-pool-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {machine.uptime()}", flush=True)

    results: dict[str, dict] = {}
    for copies in (int(c) for c in args.copies.split(",")):
        tree = work / f"input-x{copies}"
        files = throughput.build_tree(tree, copies)
        runs: dict[str, list[dict]] = {place: [] for place in PLACES}
        for repeat in range(args.repeats):
            for place, settings in PLACES.items():
                overrides = [arg for key, value in settings.items() for arg in ("--set", f"preprocess.{key}={value}")]
                with throughput.Phase(f"{files} files, {place}") as phase:
                    run = throughput.run_faceproc(tree, work / f"out-x{copies}-{place}-{repeat}", files, "local",
                                                  tuple(overrides))
                    phase.own_cpu = run["tree_cpu_seconds"]
                runs[place].append({**run, "phase": phase.to_dict()})  # the phase's own wall_seconds apart
        wall = {place: statistics.median(run["wall_seconds"] for run in runs[place]) for place in PLACES}
        results[str(files)] = {"runs": runs, "median_wall_seconds": wall,
                               "ratio_driver_over_pool": round(wall["driver"] / wall["pool"], 3),
                               "ratio_one_thread_over_driver": round(wall["driver-1-thread"] / wall["driver"], 3)}

    print(f"\n{'files':>6}  {'pool s':>7}  {'driver s':>8}  {'1 thread s':>10}  {'driver / pool':>13}  "
          f"{'1 thread / driver':>17}  driver peak RSS MB (pool / driver)")
    for files, result in results.items():
        wall = result["median_wall_seconds"]
        rss = {place: max(run["driver_peak_rss_mb"] for run in result["runs"][place]) for place in PLACES}
        print(f"{files:>6}  {wall['pool']:7.1f}  {wall['driver']:8.1f}  {wall['driver-1-thread']:10.1f}  "
              f"{result['ratio_driver_over_pool']:13.2f}  {result['ratio_one_thread_over_driver']:17.2f}  "
              f"{rss['pool']:.0f} / {rss['driver']:.0f}")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{machine.uptime()}\nresults: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
