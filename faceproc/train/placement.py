"""Where training runs: how many Ray Train workers, and what each one reserves, or the driver itself.

A pure function of the cluster's resources (`plan_placement`) so it is tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceproc.config import Config, TrainConfig, usable_cores


@dataclass
class Placement:
    """How many workers, and what each one asks Ray for."""

    workers: int
    use_gpu: bool
    cpus_per_worker: float
    gpus_per_worker: float
    in_driver: bool = False  # Ray Train's local mode: the one worker's loop runs in the driver


    @property
    def device(self) -> str:
        return "gpu" if self.use_gpu else "cpu"


def placement(config: Config, trainers: int = 1, rows: int | None = None) -> Placement:
    """Placement on the running Ray cluster (see `plan_placement`)."""
    from faceproc.core.ray_env import alive_nodes, cluster_cpus, cluster_gpus, cpu_nodes, largest_node_cpus

    return plan_placement(config.train, cluster_cpus(), largest_node_cpus(), cluster_gpus(), cpu_nodes(), trainers,
                          rows, alive_nodes())


def placement_without_ray(config: Config, trainers: int, rows: int) -> Placement | None:
    """The driver's placement when training `rows` face rows needs no Ray: none joined or named and no
    GPU (`ray_env.starts_cpu_only_here`), and a split small enough to decode
    (`train.driver_decode_max_rows`) and train (`plan_placement` on this machine's cores) in the driver.
    None: Ray starts and `placement` plans on the cluster."""
    from faceproc.core.ray_env import starts_cpu_only_here

    if rows > config.train.driver_decode_max_rows or not starts_cpu_only_here(config.ray_address):
        return None
    cores = usable_cores()
    where = plan_placement(config.train, cores, cores, 0.0, 1, trainers, rows, 1)
    return where if where.in_driver else None


def plan_placement(train: TrainConfig, cpus: float, node_cpus: float, gpus: float, nodes: int = 1,
                   trainers: int = 1, rows: int | None = None, hosts: int = 1) -> Placement:
    """GPU workers when the cluster has a GPU per worker (or when asked); else CPU workers sharing the
    CPUs of `trainers` concurrent trainings, never more than one node has (Ray caps a worker's threads
    at what it reserved). Faces decoded every epoch (`materialize` off) need a core left for Ray
    Data's tasks; reserving every core then slowed the holdout pass 6x. Without `train.workers`: one
    worker per GPU, or one per CPU node, since two MultiWorkerMirroredStrategy workers on one CPU
    node were no faster end to end than one (docs/benchmarks.md, "Training").

    A split of at most `train.driver_train_max_rows` face rows (`rows`; None: unknown) trains in the
    driver when the whole cluster is one node without GPUs (`hosts`, so the driver is on it), one
    training at a time, on one CPU worker that `train.workers` did not ask for: a worker group and
    its own TensorFlow cost 15-25 s of start-up on two cores, more than such a split's epochs."""
    gpus_per_worker = train.gpus_per_worker
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= max(1, train.workers or 1) * trainers else 0.0
    if gpus_per_worker > 0:
        workers = train.workers or max(1, int(gpus // (gpus_per_worker * trainers)))
        return Placement(workers, True, 1.0, gpus_per_worker)
    workers = max(1, train.workers or nodes)
    spare = 0 if train.materialize else 1
    in_driver = (train.workers is None and workers == 1 and trainers == 1 and hosts == 1 and not gpus
                 and rows is not None and rows <= train.driver_train_max_rows)
    return Placement(workers, False, max(0.25, min(node_cpus, (cpus - spare) / (workers * trainers))), 0.0,
                     in_driver)
