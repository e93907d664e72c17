"""`refine@<task>`'s work fanned out over row shards on a Dask cluster: the same file, byte for
byte in every key, as `python -m stages.refine <task>` (simgan/distributed.py says why).

    python -m stages.refine_sharded gaze --workers 2            # a LocalCluster on this machine
    python -m stages.refine_sharded gaze --address tcp://HOST:8786 [--shards 16]

Not a stage of dvc.yaml: run it in the repository root, then `dvc commit -f refine@<task>` records
the result in dvc.lock (the Prefect flow does both when given a Dask cluster, docs/scale.md)."""

from __future__ import annotations

import argparse

from simgan.distributed import refine_sharded
from stages.common import check_task, run_stage
from stages.refine import refine_settings


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.refine_sharded", description=__doc__.splitlines()[0])
    ap.add_argument("task")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument("--workers", type=int, help="start a LocalCluster of this many worker processes (1 thread each)")
    ap.add_argument("--shards", type=int, default=None, help="row shards (default: the cluster's thread count)")
    args = ap.parse_args(argv)
    task = check_task(args.task)
    from distributed import Client, LocalCluster

    s = refine_settings(task)
    src, dst, refiner = s.pop("src"), s.pop("dst"), s.pop("refiner")
    if args.address:
        with Client(args.address) as client:
            n = refine_sharded(src, dst, refiner, client=client, shards=args.shards, **s)
    else:
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            n = refine_sharded(src, dst, refiner, client=client, shards=args.shards, **s)
    print(f"refine {task}: {n} images -> {dst} (sharded)")


if __name__ == "__main__":
    run_stage(main)
