"""Scoring one task's downstream estimators on the held-out real test set (the evaluate stage):
every trained variant and the baselines over the same seeds, aggregated as mean +- std, plus
label preservation, the automated visual Turing test and the refined-vs-synthetic gain
(Shrivastava et al. 2017, sections 4.1-4.2: the estimator trained on refined images against the
one trained on synthetic images, tested on real ones).

The metric keys are the documented ones (docs/compare.md): rows.<row>.<metric>.{mean,std},
label_preservation, realism, gain, seeds, profile. A row is a variant's source, size and
augmentation (row_key: synthetic_1x, refined_aug_4x, ...) or a baseline (constant,
knn_synthetic). A user task (generic data) is scored per label column: rows.<row>.mae_<col> /
rmse_<col> in label units, and mae / rmse over all columns in units of the test set's std of each
column."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from simgan import metrics as M
from simgan.data.format import LABELS_GROUP, label_keys, open_dataset
from simgan.estimators import load_estimator, predict, read_training_labels
from simgan.io import SimganError
from simgan.parallel import map_processes

GAZE_THRESHOLDS = list(range(31))
HAND_THRESHOLDS = list(range(21))
USER_THRESHOLDS = [round(0.1 * i, 1) for i in range(31)]  # test-set stds: 3 is past any useful model
# per task kind: (main metric, lower is better, curve file, threshold column, thresholds)
CURVES = {
    "gaze": ("mean_error_deg", True, "error_cdf.csv", "threshold_deg", GAZE_THRESHOLDS),
    "hand": ("pck5_pct", False, "pck.csv", "threshold_px", HAND_THRESHOLDS),
    "generic": ("mae", True, "error_cdf.csv", "threshold_std", USER_THRESHOLDS),
}
# the data files of a task that scoring reads (simgan.layout.data_path names)
SPLITS = ("real_test", "synthetic", "refined", "real")


@dataclass
class TaskEvaluation:
    """evaluate_task's result: the metrics dict (metrics/<task>.json), the curves (one column per
    row over the thresholds, plots/<task>/<curve>.csv) and one prediction row per (test image,
    row, seed) (predictions.parquet). `columns`: a user task's label columns (None for gaze and
    hand)."""

    metrics: dict
    curves: pd.DataFrame
    predictions: pd.DataFrame
    columns: list[str] | None


def row_key(v: Mapping) -> str:
    return f"{v['source']}{'_aug' if v.get('augment') else ''}_{v['size']}x"


def variant_rows(variants: Mapping[str, Mapping]) -> dict[str, str]:
    """variant name -> its row. Two variants on one row (same task, source, size and augment)
    would overwrite each other's row and mix their predictions: a ValueError naming both keys."""
    rows: dict[str, str] = {}
    for name, v in variants.items():
        row = row_key(v)
        other = next((n for n, r in rows.items() if r == row), None)
        if other is not None:
            of_task = f" of task {v['task']!r}" if "task" in v else ""
            raise ValueError(
                f"keys 'variants.{other}' and 'variants.{name}': expected one variant per (task, source, size, augment), "
                f"both are row {row!r}{of_task}"
            )
        rows[name] = row
    return rows


def score(task: str, pred: np.ndarray, truth: np.ndarray) -> tuple[dict, np.ndarray, list[float]]:
    """-> (summary metrics, per-image error, curve)."""
    if task == "gaze":
        err = M.angular_error_deg(pred, truth)
        return M.gaze_summary(err), err, M.error_cdf(err, GAZE_THRESHOLDS)
    uv = truth[..., :2]
    per_image = np.linalg.norm(pred - uv, axis=-1).mean(axis=1)
    return (
        {"pck5_pct": M.pck_at(pred, uv, 5), "mean_error_px": float(per_image.mean())},
        per_image,
        M.pck_curve(pred, uv, HAND_THRESHOLDS),
    )


def aggregate(per_seed: list[dict]) -> dict:
    return {k: M.mean_std([s[k] for s in per_seed]) for k in per_seed[0]}


def user_scorer(truth: np.ndarray, columns: list[str]):
    """score() for a user task: errors relative to the test set's spread of each column."""
    spread = truth.std(axis=0)
    scale = np.where(spread > 0, spread, 1.0)

    def score_user(pred: np.ndarray) -> tuple[dict, np.ndarray, list[float]]:
        summary, per_image = M.regression_summary(pred, truth, scale, columns)
        return summary, per_image, M.error_cdf(per_image, USER_THRESHOLDS)

    return score_user


def user_label_preservation(synthetic: str | os.PathLike, refined: str | os.PathLike, n: int) -> dict:
    """Refinement must not touch labels: the share of label columns of the refined file that equal
    the synthetic file's byte for byte (100), and the mean |pixel change| per image on the first n."""
    with open_dataset(synthetic) as syn, open_dataset(refined) as ref:
        keys = [k for k in syn.keys() if k.startswith(f"{LABELS_GROUP}/")]
        a, b = syn.read(keys), ref.read([k for k in keys if k in ref])
        same = [k in b and a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in keys]
        x = syn.read([syn.image_key], slice(0, n))[syn.image_key].astype(np.float64)
        y = ref.read([ref.image_key], slice(0, n))[ref.image_key].astype(np.float64)
    change = np.abs(y - x).reshape(len(x), -1).mean(axis=1)
    return {"labels_identical_pct": 100.0 * float(np.mean(same)), "pixel_change": M.mean_std(change)}


def gain(rows: Mapping[str, Mapping], sizes, main_metric: str, lower_better: bool) -> dict[str, float]:
    """The refined row's improvement over the synthetic row of each training-set size, in % of
    the synthetic row's main metric (the paper's headline comparison)."""
    out = {}
    for size in sorted(set(sizes)):
        s, r = rows.get(f"synthetic_{size}x"), rows.get(f"refined_{size}x")
        if s and r:
            a, b = s[main_metric]["mean"], r[main_metric]["mean"]
            out[f"refined_vs_synthetic_{size}x_rel_pct"] = 100.0 * (
                (a - b) / a if lower_better else (b - a) / max(a, 1e-9)
            )
    return out


def results_markdown(task: str, metrics: dict, columns: list[str]) -> str:
    """A user task's table (the paper's tables in reports/results.md cover gaze and hand only)."""
    cols = ["mae", "rmse"] + [f"mae_{c}" for c in columns]
    lines = [
        f"# {task}: real test set",
        "",
        "mae / rmse: over all label columns, in test-set stds; mae_<column>: label units. "
        f"Mean ± std over {metrics['seeds']} seed(s).",
        "",
        "| row | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, row in metrics["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]['mean']:.4g} ± {row[c]['std']:.2g}" for c in cols) + " |")
    lp, realism = metrics["label_preservation"], metrics["realism"]
    lines += [
        "",
        f"Label columns identical after refinement: {lp['labels_identical_pct']:.0f}%; mean |pixel change| "
        f"{lp['pixel_change']['mean']:.2f} ± {lp['pixel_change']['std']:.2f} grey levels.",
        f"Visual Turing test (a fresh classifier, 50% = indistinguishable): refined vs real "
        f"{realism['refined_vs_real_acc_pct']:.1f}%, synthetic vs real {realism['synthetic_vs_real_acc_pct']:.1f}%.",
        "",
    ]
    return "\n".join(lines)


_REALISM: dict = {}  # set by evaluate_task before forking the realism workers (fork: no pickling of images)


def _realism_pair(name: str) -> float:
    r = _REALISM
    return M.realism_accuracy(r["real"], r["others"][name], r["kind"], seed=r["seed"], steps=r["steps"])


def evaluate_task(
    task: str,
    kind: str,
    files: Mapping[str, str | os.PathLike],
    variants: Mapping[str, Mapping],
    estimators: Mapping[str, Mapping[int, str | os.PathLike | nn.Module]],
    *,
    seeds: list[int],
    base_n: int,
    realism_n: int,
    realism_steps: int,
    knn_k: int | None = None,
    knn_train_n: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    workers: int = 1,
    profile: str = "default",
) -> TaskEvaluation:
    """Score task `task` (its kind: gaze, hand or generic) on `files["real_test"]`.

    files: the task's data files by split (SPLITS). variants: name -> {source, size, augment} of
    the task's trained variants; estimators: name -> seed -> the estimator (a model file or a
    model) for each seed in `seeds`. The baselines are deterministic, so each seed gets the same
    prediction (std 0 by construction): the constant (mean-label) predictor of the first `base_n`
    synthetic labels, and for gaze with `knn_k` the k-NN over the first `knn_train_n` synthetic
    images. Label preservation and realism use the first `realism_n` images of each set; the two
    realism classifiers train `realism_steps` steps from seeds[0], side by side in `workers`
    processes of `threads` torch threads (the same numbers as in one process)."""
    main_metric, lower_better, _, col, thresholds = CURVES[kind]
    rows_of = variant_rows(variants)
    with open_dataset(files["real_test"]) as ds:
        test_images = ds[ds.image_key]
        truth, columns = read_training_labels(ds, kind, name=task)
    scorer = user_scorer(truth, columns) if kind == "generic" else (lambda pred: score(task, pred, truth))
    rows, curves, frames = {}, {}, []

    def record(name: str, seed_preds: dict[int, np.ndarray]) -> None:
        per_seed, curve_acc = [], []
        for seed, pred in seed_preds.items():
            summary, err, curve = scorer(pred)
            per_seed.append(summary)
            curve_acc.append(curve)
            frame = pd.DataFrame({"index": np.arange(len(pred)), "row": name, "seed": seed, "error": err})
            flat = pred.reshape(len(pred), -1)
            for j in range(flat.shape[1]):
                frame[f"pred_{columns[j]}" if columns else f"pred_{j}"] = flat[:, j]
            frames.append(frame)
        rows[name] = aggregate(per_seed)
        curves[name] = np.mean(curve_acc, axis=0)

    # trained variants
    for name, row in rows_of.items():
        preds = {}
        for seed in seeds:
            model = estimators[name][seed]
            if not isinstance(model, nn.Module):
                model, _ = load_estimator(model, device=device)
            preds[seed] = predict(model, kind, test_images, device=device)
        record(row, preds)

    # baselines
    with open_dataset(files["synthetic"]) as ds:
        syn_labels, syn_columns = read_training_labels(ds, kind, slice(0, base_n), name=task)
    if syn_columns != columns:
        raise SimganError(
            f"{files['synthetic']}: expected the label columns of {files['real_test']} ({columns}), got {syn_columns}"
        )
    const = M.constant_prediction(kind, syn_labels[..., :2] if kind == "hand" else syn_labels, len(truth))
    record("constant", {s: const for s in seeds})
    if kind == "gaze" and knn_k:
        label = label_keys(kind)[0]
        with open_dataset(files["synthetic"]) as ds:
            knn_train = ds.read([ds.image_key, label], slice(0, knn_train_n))
        pred = M.knn_predict(
            M.equalized_pixel_features(knn_train[ds.image_key]),
            knn_train[label],
            M.equalized_pixel_features(test_images),
            k=knn_k,
            task="gaze",
        )
        record("knn_synthetic", {s: pred for s in seeds})

    # label preservation and realism, on the first n refined images
    n = realism_n
    with open_dataset(files["synthetic"]) as ds:
        img = ds.image_key
        syn = ds.read(None if kind != "generic" else [img], slice(0, n))
    with open_dataset(files["refined"]) as ds:
        ref = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    with open_dataset(files["real"]) as ds:
        real = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    if kind == "gaze":
        label_pres = {"pupil_shift_px": dict(zip(("mean", "std"), M.pupil_shift_px(syn[img], ref)))}
    elif kind == "hand":
        label_pres = {"joint_depth_shift": {"mean": M.joint_depth_shift(syn[img], ref, syn["joints"])}}
    else:
        label_pres = user_label_preservation(files["synthetic"], files["refined"], n)
    global _REALISM
    _REALISM = {
        "real": real,
        "others": {"refined": ref, "synthetic": syn[img]},
        "kind": kind,
        "seed": seeds[0],
        "steps": realism_steps,
    }
    accs = dict(map_processes(_realism_pair, ["refined", "synthetic"], workers, threads))
    realism = {f"{name}_vs_real_acc_pct": accs[name] for name in ("refined", "synthetic")}

    metrics = {
        "rows": rows,
        "label_preservation": label_pres,
        "realism": realism,
        "gain": gain(rows, [v["size"] for v in variants.values()], main_metric, lower_better),
        "seeds": len(seeds),
        "profile": profile,
    }
    curve_df = pd.DataFrame({col: thresholds, **{k: np.round(v, 3) for k, v in curves.items()}})
    return TaskEvaluation(metrics, curve_df, pd.concat(frames, ignore_index=True), columns)


def summary_line(task: str, kind: str, metrics: Mapping) -> str:
    """One line per task for the log: each row's main metric, mean +- std over seeds."""
    main_metric = CURVES[kind][0]
    return f"evaluate {task}: " + ", ".join(
        f"{k} {v[main_metric]['mean']:.2f}±{v[main_metric]['std']:.2f}" for k, v in metrics["rows"].items()
    )
