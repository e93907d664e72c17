"""Stage `report`: reports/results.md -- the results tables in the paper's layout (our numbers
beside the paper's), the verdicts, and the figures of both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simgan.figures import losses_figure
from simgan.io import write_text_atomic
from simgan.report import FIGURES, figures_md, report_md
from stages.common import PAPER_TASKS, run_stage


def _seed_of(path: Path) -> int:
    return int(path.stem.removeprefix("seed"))


def main(argv: list[str]) -> None:
    by_task = {}
    for task in PAPER_TASKS:
        path = Path("metrics") / f"{task}.json"
        if path.exists():
            by_task[task] = json.loads(path.read_text())
        # the first replicate's curves (every replicate's CSV is in plots/<task>/train_losses/)
        curves = sorted((Path("plots") / task / "train_losses").glob("seed*.csv"), key=_seed_of)
        if curves:
            title = f"{task}: adversarial training, {curves[0].stem} (1 of {len(curves)} replicates)"
            losses_figure(Path("reports") / task / "losses.png", pd.read_csv(curves[0]), title)
    present = {task: [name for name, _ in FIGURES if (Path("reports") / task / name).exists()] for task in by_task}
    write_text_atomic(Path("reports") / "results.md", report_md(by_task) + figures_md(present))


if __name__ == "__main__":
    run_stage(main)
