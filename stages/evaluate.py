"""Stage `evaluate@<task>`: every trained variant and baseline scored on the held-out real test
set, over the same seeds (whole-pipeline replicates: seed k's refined row is replicate k's GAN),
plus label preservation, the automated visual Turing test per replicate and the paired
differences (simgan.evaluation.evaluate_task).

Outputs (names are the documented metric keys; docs/compare.md):
    metrics/<task>.json               rows.<variant>.<metric>.{mean,std}, label_preservation, realism, gain
    plots/gaze/error_cdf.csv          threshold_deg + one column per row (% of test images within)
    plots/hand/pck.csv                threshold_px + one column per row (% of joints within)
    reports/<task>/predictions.parquet  one row per (test image, row, seed): prediction and error
    reports/<task>/curves.png, reports/<task>/size.png

A user task (params.yaml `tasks`, generic data) is scored per label column: rows.<row>.mae_<col> /
rmse_<col> in label units, and rows.<row>.mae / rmse over all columns in units of the test set's
std of each column; plots/<task>/error_cdf.csv has threshold_std; predictions.parquet has
pred_<col>. Its table is reports/<task>/results.md (the `report` stage is the paper's gaze + hand
report).
"""

from __future__ import annotations

from pathlib import Path

from simgan.config import ParamsError, one_of, percentage, positive
from simgan.device import kernel_caps, resolve_bf16
from simgan.evaluation import CURVES, SPLITS, evaluate_task, results_markdown, summary_line, variant_rows
from simgan.figures import curves_figure, size_figure
from simgan.io import atomic_path, write_json_atomic, write_text_atomic
from simgan.layout import refined_path
from stages.common import (
    TASK_ARG,
    Params,
    check_task,
    compute_layout,
    data_path,
    data_task,
    device_param,
    run_stage,
    seeds_param,
)


def task_variants(p: Params, task: str) -> dict[str, dict]:
    """params.yaml's variants of `task`, one per row of its results (simgan.evaluation.variant_rows)."""
    variants = {name: v for name, v in p.section("variants").items() if v.get("task") == task}
    try:
        variant_rows(variants)
    except ValueError as e:
        raise ParamsError(f"{p.path}: {e}") from None
    return variants


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.evaluate {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    kind = data_task(task)
    main_metric, _, curve_file, col, _ = CURVES[kind]
    if kind == "generic":  # dvc.yaml declares plots/<task>/<curve>.csv; a user task writes error_cdf
        p.get(f"tasks.{task}.curve", str, one_of("error_cdf"), default="error_cdf")
    key = f"evaluate.{task}"
    seeds = seeds_param(p)
    variants = task_variants(p, task)
    knn = task == "gaze" and p.get(f"{key}.knn", bool)
    threads, workers = compute_layout(p)
    result = evaluate_task(
        task,
        kind,
        {
            **{split: data_path(task, split) for split in SPLITS if split != "refined"},
            "refined": {seed: refined_path(task, seed) for seed in seeds},
        },
        variants,
        {
            name: {seed: Path("models") / task / "estimators" / name / f"seed{seed}.pt" for seed in seeds}
            for name in variants
        },
        seeds=seeds,
        base_n=p.get(f"estimator.{task}.base_n", int, positive),
        realism_n=p.get(f"{key}.realism_n", int, positive),
        realism_steps=p.get(f"{key}.realism_steps", int, positive),
        realism_restarts=p.get(f"{key}.realism_restarts", int, positive, default=1),
        realism_recheck_below=p.get(f"{key}.realism_recheck_below", (int, float), percentage, default=100.0),
        knn_k=p.get(f"{key}.knn_k", int, positive) if knn else None,
        knn_train_n=p.get(f"{key}.knn_train_n", int, positive) if knn else None,
        device=device_param(p, f"{key}.device"),
        threads=threads,
        workers=workers,
        profile=p.get("profile", str, default="default"),
    )
    # which kernels made these numbers: oneDNN's bf16/fp32 kernels differ by CPU kind, and so do a
    # trained network's bits (README: what reproduces where); the stages of one run share a machine
    gan = f"gan.{task}.train"
    bf16 = resolve_bf16(p.get(f"{gan}.bf16", (bool, str), default="auto"), p.get(f"{gan}.device", str, default="cpu"))
    result.metrics["numerics"] = {**kernel_caps(), "gan_bf16": bf16}
    write_json_atomic(Path("metrics") / f"{task}.json", result.metrics)
    write_text_atomic(Path("plots") / task / curve_file, result.curves.to_csv(index=False))
    if kind == "generic":
        write_text_atomic(Path("reports") / task / "results.md", results_markdown(task, result.metrics, result.columns))
    with atomic_path(Path("reports") / task / "predictions.parquet", suffix=".parquet") as tmp:
        result.predictions.to_parquet(tmp, index=False)
    curves_figure(Path("reports") / task / "curves.png", task, result.curves, col)
    size_figure(Path("reports") / task / "size.png", task, result.metrics["rows"], main_metric)
    print(summary_line(task, kind, result.metrics))


if __name__ == "__main__":
    run_stage(main)
