"""`simgan refine TASK`: the refine@<task> stage's outputs (one refined set per replicate, the
seeds of params.yaml `seeds`) fanned out over row shards on a Dask cluster; the same files, byte
for byte in every key, as `dvc repro refine@<task>` (simgan/distributed.py says why).

    simgan refine gaze --workers 2                            # a LocalCluster on this machine
    simgan refine gaze --address tcp://HOST:8786 [--shards 16]

Run it in the repository root (it reads params.yaml's `refine` section and models/<task>/refiners/
like the stage), then `dvc commit -f refine@<task>` records the result in dvc.lock (the Prefect
flow does both when given a Dask cluster, docs/scale.md). This module imports torch and Dask only
when the command runs, so the other `simgan` commands never pay for them."""

from __future__ import annotations

import argparse
from pathlib import Path

from simgan.layout import refined_dir


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n


def refine_on_cluster(
    task: str, address: str | None = None, workers: int | None = None, shards: int | None = None, root: str = "."
) -> int:
    """Refine task `task`'s synthetic set through every replicate's refiner as its refine stage
    would, on the Dask scheduler at `address` or on a LocalCluster of `workers` one-thread
    processes; returns rows written (all replicates)."""
    from distributed import Client, LocalCluster

    from simgan.config import Params, seeds_param
    from simgan.distributed import refine_sharded
    from simgan.refine import refine_settings

    p = Params.load(Path(root) / "params.yaml")
    settings = [refine_settings(p, task, seed, root) for seed in seeds_param(p)]

    def refine_all(client) -> int:
        n = 0
        for s in settings:
            s = dict(s)
            n += refine_sharded(s.pop("src"), s.pop("dst"), s.pop("refiner"), client=client, shards=shards, **s)
        return n

    if address:
        with Client(address) as client:
            return refine_all(client)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        return refine_all(client)


def register(subparsers) -> None:
    about = "refine a task's synthetic set shard by shard on a Dask cluster: the same bytes as `dvc repro refine@TASK`"
    ap = subparsers.add_parser(
        "refine", help=about, description=about + "; then `dvc commit -f refine@TASK` records it"
    )
    ap.add_argument("task", help="gaze, hand or a key of params.yaml 'tasks'")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument(
        "--workers", type=_at_least_one, help="start a LocalCluster of this many worker processes (1 thread each)"
    )
    ap.add_argument(
        "--shards", type=_at_least_one, default=None, help="row shards (default: the cluster's thread count)"
    )

    def run(args) -> int:
        n = refine_on_cluster(args.task, address=args.address, workers=args.workers, shards=args.shards)
        print(f"refine {args.task}: {n} images -> {refined_dir(args.task)}/ (sharded)")
        return 0

    ap.set_defaults(func=run)
