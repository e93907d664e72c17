"""Serve the simgan deployments from one process on this machine: `python -m flows.serve`.

    simgan/full   every stage of dvc.yaml
    simgan/gaze   the stages evaluate@gaze needs, then report
    simgan/hand   the stages evaluate@hand needs, then report

Start runs with `prefect deployment run simgan/full --watch` (docs/prefect.md). One flow run at a
time: they share one DVC workspace, and `dvc repro` holds its lock per repository.
The process polls the server every --poll seconds (Prefect's default is 10 s).
"""

from __future__ import annotations

import argparse

from prefect import serve

import flows  # noqa: F401  (offline settings before Prefect loads)
from flows.pipeline import simgan

# deployment name -> (parameters, description); prefect.yaml lists the same three for a worker
DEPLOYMENTS = {
    "full": ({}, "Every stage of dvc.yaml, through DVC"),
    "gaze": ({"task": "gaze"}, "The gaze stages (what evaluate@gaze needs) and report"),
    "hand": ({"task": "hand"}, "The hand stages (what evaluate@hand needs) and report"),
}


def deployments():
    return [
        simgan.to_deployment(name, parameters=params, description=text, tags=["simgan"])
        for name, (params, text) in DEPLOYMENTS.items()
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between polls for scheduled runs")
    args = ap.parse_args(argv)
    serve(*deployments(), limit=1, query_seconds=args.poll)


if __name__ == "__main__":
    main()
