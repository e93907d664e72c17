"""Result figures as PNG (matplotlib Agg: offline, no CDN)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from simgan.io import atomic_path

SOURCE_STYLE = {"synthetic": ("tab:red", "-"), "refined": ("tab:blue", "-"), "real": ("tab:green", "-")}


def _style(row: str):
    source = row.split("_")[0]
    colour, line = SOURCE_STYLE.get(source, ("tab:gray", ":"))
    if "_aug" in row:
        line = "--"
    return colour, line


def _save(fig, path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# Axis labels by the curve's threshold column (stages/evaluate.py names it after the unit).
CURVE_AXES = {
    "threshold_deg": ("angular error (degrees)", "% of test images within"),
    "threshold_px": ("distance threshold d (pixels)", "% of joints within d"),
    "threshold_std": ("mean |error| over label columns (test-set stds)", "% of test images within"),
}


def curves_figure(path, task: str, curves: pd.DataFrame, x: str) -> None:
    """Cumulative error curve (gaze, user tasks) or PCK curve (hand), one line per row."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for col in curves.columns:
        if col == x:
            continue
        colour, line = _style(col)
        ax.plot(curves[x], curves[col], line, color=colour, label=col, alpha=0.6 if re.search(r"_1x$", col) else 1.0)
    xlabel, ylabel = CURVE_AXES.get(x, (x, "% within"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{task}: real test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


_METRIC_LABELS = {
    "mean_error_deg": "mean angular error (deg)",
    "pck5_pct": "% joints within 5 px",
    "mae": "mean |error| (test-set stds)",
}
_SIZED_ROW = re.compile(r"^(?P<source>synthetic|refined|real)_(?P<n>\d+)x$")


def size_figure(path, task: str, rows: dict, metric: str) -> None:
    """Main metric (mean +- std over seeds) against training-set size, one line per source. With a
    single training-set size there is no line to draw: one point per source (x = source) with its
    error bar, titled with that size."""
    by_source: dict[str, list[tuple[int, dict]]] = {}
    for k, v in rows.items():
        if m := _SIZED_ROW.match(k):
            by_source.setdefault(m["source"], []).append((int(m["n"]), v[metric]))
    sizes = sorted({n for pts in by_source.values() for n, _ in pts})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if len(sizes) == 1:
        sources = [s for s in ("synthetic", "refined", "real") if s in by_source]
        for i, source in enumerate(sources):
            ((_, m),) = by_source[source]
            ax.errorbar([i], [m["mean"]], yerr=[m["std"]], marker="o", capsize=4, color=_style(source)[0], label=source)
        ax.set_xticks(range(len(sources)), sources)
        ax.set_xlim(-0.5, len(sources) - 0.5)
        ax.set_xlabel("training data")
        ax.set_title(f"{task}: accuracy at training-set size {sizes[0]}x")
    else:
        for source in ("synthetic", "refined", "real"):
            pts = sorted(by_source.get(source, []), key=lambda p: p[0])
            if pts:
                ax.errorbar(
                    [s for s, _ in pts],
                    [m["mean"] for _, m in pts],
                    yerr=[m["std"] for _, m in pts],
                    marker="o",
                    capsize=3,
                    color=_style(source)[0],
                    label=source,
                )
        ax.set_xlabel("training-set size (multiples of 1x)")
        ax.set_title(f"{task}: accuracy vs training-set size")
    for base in ("constant", "knn_synthetic"):
        if base in rows:
            ax.axhline(rows[base][metric]["mean"], color="tab:gray", ls=":" if base == "constant" else "-.", label=base)
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def losses_figure(path, losses: pd.DataFrame, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for col in ("loss_refiner_adv", "loss_refiner_reg", "loss_disc"):
        if col in losses:
            axes[0].plot(losses["step"], losses[col], label=col)
    for col in ("disc_acc_real", "disc_acc_refined", "refined_change"):
        if col in losses:
            axes[1].plot(losses["step"], losses[col], label=col)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)
