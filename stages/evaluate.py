"""Stage `evaluate@<task>`: every trained variant and baseline scored on the held-out real test
set, over the same seeds, plus label preservation and the automated visual Turing test.

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

import numpy as np
import pandas as pd

from simgan import metrics as M
from simgan.config import ParamsError, one_of, positive
from simgan.data.format import LABELS_GROUP, label_keys, open_dataset
from simgan.estimators import features, load_estimator, predict
from simgan.figures import curves_figure, size_figure
from simgan.io import atomic_path, write_json_atomic, write_text_atomic
from simgan.parallel import map_processes
from stages.common import TASKS, TASK_ARG, Params, check_task, compute_layout, data_path, data_task, device_param, read_labels, run_stage

GAZE_THRESHOLDS = list(range(0, 31))
HAND_THRESHOLDS = list(range(0, 21))
USER_THRESHOLDS = [round(0.1 * i, 1) for i in range(31)]  # test-set stds: 3 is past any useful model
# per task kind: (main metric, lower is better, curve file, threshold column, thresholds)
CURVES = {"gaze": ("mean_error_deg", True, "error_cdf.csv", "threshold_deg", GAZE_THRESHOLDS),
          "hand": ("pck5_pct", False, "pck.csv", "threshold_px", HAND_THRESHOLDS),
          "generic": ("mae", True, "error_cdf.csv", "threshold_std", USER_THRESHOLDS)}


_REALISM: dict = {}  # set by main before forking the realism workers (fork: no pickling of images)


def _realism_pair(name: str) -> float:
    r = _REALISM
    return M.realism_accuracy(r["real"], r["others"][name], r["kind"], seed=r["seed"], steps=r["steps"])


def task_variants(p: Params, task: str) -> dict[str, dict]:
    return {name: v for name, v in p.section("variants").items() if v.get("task") == task}


def row_key(v: dict) -> str:
    return f"{v['source']}{'_aug' if v.get('augment') else ''}_{v['size']}x"


def score(task: str, pred: np.ndarray, truth: np.ndarray) -> tuple[dict, np.ndarray, list[float]]:
    """-> (summary metrics, per-image error, curve)."""
    if task == "gaze":
        err = M.angular_error_deg(pred, truth)
        return M.gaze_summary(err), err, M.error_cdf(err, GAZE_THRESHOLDS)
    uv = truth[..., :2]
    per_image = np.linalg.norm(pred - uv, axis=-1).mean(axis=1)
    return {"pck5_pct": M.pck_at(pred, uv, 5), "mean_error_px": float(per_image.mean())}, per_image, M.pck_curve(pred, uv, HAND_THRESHOLDS)


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


def user_label_preservation(task: str, n: int) -> dict:
    """Refinement must not touch labels: the share of label columns of refined.h5 that equal
    synthetic.h5's byte for byte (100), and the mean |pixel change| per image on the first n."""
    with open_dataset(data_path(task, "synthetic")) as syn, open_dataset(data_path(task, "refined")) as ref:
        keys = [k for k in syn.keys() if k.startswith(f"{LABELS_GROUP}/")]
        a, b = syn.read(keys), ref.read([k for k in keys if k in ref])
        same = [k in b and a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in keys]
        x = syn.read([syn.image_key], slice(0, n))[syn.image_key].astype(np.float64)
        y = ref.read([ref.image_key], slice(0, n))[ref.image_key].astype(np.float64)
    change = np.abs(y - x).reshape(len(x), -1).mean(axis=1)
    return {"labels_identical_pct": 100.0 * float(np.mean(same)), "pixel_change": M.mean_std(change)}


def results_markdown(task: str, metrics: dict, columns: list[str]) -> str:
    """A user task's table (the paper's tables in reports/results.md cover gaze and hand only)."""
    cols = ["mae", "rmse"] + [f"mae_{c}" for c in columns]
    lines = [f"# {task}: real test set", "",
             "mae / rmse: over all label columns, in test-set stds; mae_<column>: label units. "
             f"Mean ± std over {metrics['seeds']} seed(s).", "",
             "| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in metrics["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]['mean']:.4g} ± {row[c]['std']:.2g}" for c in cols) + " |")
    lp, realism = metrics["label_preservation"], metrics["realism"]
    lines += ["", f"Label columns identical after refinement: {lp['labels_identical_pct']:.0f}%; mean |pixel change| "
              f"{lp['pixel_change']['mean']:.2f} ± {lp['pixel_change']['std']:.2f} grey levels.",
              f"Visual Turing test (a fresh classifier, 50% = indistinguishable): refined vs real "
              f"{realism['refined_vs_real_acc_pct']:.1f}%, synthetic vs real {realism['synthetic_vs_real_acc_pct']:.1f}%.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.evaluate {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    kind = data_task(task)
    main_metric, lower_better, curve_file, col, thresholds = CURVES[kind]
    if kind == "generic":  # dvc.yaml declares plots/<task>/<curve>.csv; a user task writes error_cdf
        p.get(f"tasks.{task}.curve", str, one_of("error_cdf"), default="error_cdf")
    key = f"evaluate.{task}"
    seeds = p.get("seeds", list)
    with open_dataset(data_path(task, "real_test")) as ds:
        test_images = ds[ds.image_key]
        truth, columns = read_labels(ds, task)
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
    device = device_param(p, f"{key}.device")
    for name, v in task_variants(p, task).items():
        preds = {}
        for seed in seeds:
            model, _ = load_estimator(Path("models") / task / "estimators" / name / f"seed{seed}.pt", device=device)
            preds[seed] = predict(model, kind, test_images, device=device)
        record(row_key(v), preds)

    # baselines: deterministic, so every seed gives the same prediction (std 0 by construction)
    base_n = p.get(f"estimator.{task}.base_n", int, positive)
    with open_dataset(data_path(task, "synthetic")) as ds:
        syn_labels, syn_columns = read_labels(ds, task, slice(0, base_n))
    if syn_columns != columns:
        raise ParamsError(f"{data_path(task, 'synthetic')}: expected the label columns of {data_path(task, 'real_test')} "
                          f"({columns}), got {syn_columns}")
    const = M.constant_prediction(kind, syn_labels[..., :2] if kind == "hand" else syn_labels, len(truth))
    record("constant", {s: const for s in seeds})
    if task == "gaze" and p.get(f"{key}.knn", bool):
        label = label_keys(task)[0]
        n = p.get(f"{key}.knn_train_n", int, positive)
        with open_dataset(data_path(task, "synthetic")) as ds:
            knn_train = ds.read([ds.image_key, label], slice(0, n))
        pred = M.knn_predict(M.equalized_pixel_features(knn_train[ds.image_key]), knn_train[label],
                             M.equalized_pixel_features(test_images), k=p.get(f"{key}.knn_k", int, positive), task="gaze")
        record("knn_synthetic", {s: pred for s in seeds})

    # label preservation and realism, on the first n refined images
    n = p.get(f"{key}.realism_n", int, positive)
    with open_dataset(data_path(task, "synthetic")) as ds:
        img = ds.image_key
        syn = ds.read(None if task in TASKS else [img], slice(0, n))
    with open_dataset(data_path(task, "refined")) as ds:
        ref = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    with open_dataset(data_path(task, "real")) as ds:
        real = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    if task == "gaze":
        label_pres = {"pupil_shift_px": dict(zip(("mean", "std"), M.pupil_shift_px(syn[img], ref)))}
    elif task == "hand":
        label_pres = {"joint_depth_shift": {"mean": M.joint_depth_shift(syn[img], ref, syn["joints"])}}
    else:
        label_pres = user_label_preservation(task, n)
    steps = p.get(f"{key}.realism_steps", int, positive)
    # the two classifiers are independent: side by side in worker processes (same numbers as in
    # this process, since each depends only on its seed and the thread count)
    global _REALISM
    _REALISM = {"real": real, "others": {"refined": ref, "synthetic": syn[img]}, "kind": kind,
                "seed": seeds[0], "steps": steps}
    threads, workers = compute_layout(p)
    accs = dict(map_processes(_realism_pair, ["refined", "synthetic"], workers, threads))
    realism = {f"{name}_vs_real_acc_pct": accs[name] for name in ("refined", "synthetic")}

    gain = {}
    for size in sorted({v["size"] for v in task_variants(p, task).values()}):
        s, r = rows.get(f"synthetic_{size}x"), rows.get(f"refined_{size}x")
        if s and r:
            a, b = s[main_metric]["mean"], r[main_metric]["mean"]
            gain[f"refined_vs_synthetic_{size}x_rel_pct"] = 100.0 * ((a - b) / a if lower_better else (b - a) / max(a, 1e-9))
    metrics = {"rows": rows, "label_preservation": label_pres, "realism": realism, "gain": gain,
               "seeds": len(seeds), "profile": p.get("profile", str, default="default")}
    write_json_atomic(Path("metrics") / f"{task}.json", metrics)

    curve_df = pd.DataFrame({col: thresholds, **{k: np.round(v, 3) for k, v in curves.items()}})
    write_text_atomic(Path("plots") / task / curve_file, curve_df.to_csv(index=False))
    if kind == "generic":
        write_text_atomic(Path("reports") / task / "results.md", results_markdown(task, metrics, columns))
    with atomic_path(Path("reports") / task / "predictions.parquet", suffix=".parquet") as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    curves_figure(Path("reports") / task / "curves.png", task, curve_df, col)
    size_figure(Path("reports") / task / "size.png", task, rows, main_metric)
    print(f"evaluate {task}: " + ", ".join(f"{k} {v[main_metric]['mean']:.2f}±{v[main_metric]['std']:.2f}" for k, v in rows.items()))


if __name__ == "__main__":
    run_stage(main)
