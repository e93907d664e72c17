"""Stage `report`: reports/results.md -- the results tables in the paper's layout (our numbers
beside the paper's), the verdicts, and the figures of both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simgan.figures import losses_figure
from simgan.io import write_text_atomic
from simgan.report import report_md
from stages.common import TASKS, run_stage

FIGURES = [("samples.png", "synthetic | refined | real samples"), ("curves.png", "error / PCK curves on the real test set"),
           ("size.png", "accuracy vs training-set size"), ("losses.png", "adversarial training losses")]


def main(argv: list[str]) -> None:
    by_task = {}
    for task in TASKS:
        path = Path("metrics") / f"{task}.json"
        if path.exists():
            by_task[task] = json.loads(path.read_text())
        losses = Path("plots") / task / "train_losses.csv"
        if losses.exists():
            losses_figure(Path("reports") / task / "losses.png", pd.read_csv(losses), f"{task}: adversarial training")
    text = report_md(by_task)
    figs = ["", "## Figures", ""]
    for task in by_task:
        for name, caption in FIGURES:
            if (Path("reports") / task / name).exists():
                figs.append(f"![{task}: {caption}]({task}/{name})")
    write_text_atomic(Path("reports") / "results.md", text + "\n".join(figs) + "\n")


if __name__ == "__main__":
    run_stage(main)
