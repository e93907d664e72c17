"""Stage `evaluate@<task>`: every trained variant and baseline scored on the held-out real test
set, over the same seeds, plus label preservation and the automated visual Turing test.

Outputs (names are the documented metric keys; docs/compare.md):
    metrics/<task>.json               rows.<variant>.<metric>.{mean,std}, label_preservation, realism, gain
    plots/gaze/error_cdf.csv          threshold_deg + one column per row (% of test images within)
    plots/hand/pck.csv                threshold_px + one column per row (% of joints within)
    reports/<task>/predictions.parquet  one row per (test image, row, seed): prediction and error
    reports/<task>/curves.png, reports/<task>/size.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simgan import metrics as M
from simgan.config import ParamsError, positive
from simgan.data.format import label_keys, open_dataset
from simgan.estimators import features, load_estimator, predict
from simgan.figures import curves_figure, size_figure
from simgan.io import atomic_path, write_json_atomic, write_text_atomic
from stages.common import Params, check_task, data_path, run_stage

GAZE_THRESHOLDS = list(range(0, 31))
HAND_THRESHOLDS = list(range(0, 21))


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


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError("usage: python -m stages.evaluate gaze|hand")
    task = check_task(argv[0])
    p = Params.load()
    key = f"evaluate.{task}"
    seeds = p.get("seeds", list)
    label = label_keys(task)[0]
    with open_dataset(data_path(task, "real_test")) as ds:
        test_images, truth = ds[ds.image_key], ds[label]
    rows, curves, frames = {}, {}, []

    def record(name: str, seed_preds: dict[int, np.ndarray]) -> None:
        per_seed, curve_acc = [], []
        for seed, pred in seed_preds.items():
            summary, err, curve = score(task, pred, truth)
            per_seed.append(summary)
            curve_acc.append(curve)
            frame = pd.DataFrame({"index": np.arange(len(pred)), "row": name, "seed": seed, "error": err})
            flat = pred.reshape(len(pred), -1)
            for j in range(flat.shape[1]):
                frame[f"pred_{j}"] = flat[:, j]
            frames.append(frame)
        rows[name] = aggregate(per_seed)
        curves[name] = np.mean(curve_acc, axis=0)

    # trained variants
    for name, v in task_variants(p, task).items():
        preds = {}
        for seed in seeds:
            model, _ = load_estimator(Path("models") / task / "estimators" / name / f"seed{seed}.pt")
            preds[seed] = predict(model, task, test_images)
        record(row_key(v), preds)

    # baselines: deterministic, so every seed gives the same prediction (std 0 by construction)
    base_n = p.get(f"estimator.{task}.base_n", int, positive)
    with open_dataset(data_path(task, "synthetic")) as ds:
        syn_labels = ds.read([label], slice(0, base_n))[label]
    const = M.constant_prediction(task, syn_labels if task == "gaze" else syn_labels[..., :2], len(truth))
    record("constant", {s: const for s in seeds})
    if task == "gaze" and p.get(f"{key}.knn", bool):
        n = p.get(f"{key}.knn_train_n", int, positive)
        with open_dataset(data_path(task, "synthetic")) as ds:
            knn_train = ds.read([ds.image_key, label], slice(0, n))
        pred = M.knn_predict(M.equalized_pixel_features(knn_train[ds.image_key]), knn_train[label],
                             M.equalized_pixel_features(test_images), k=p.get(f"{key}.knn_k", int, positive), task="gaze")
        record("knn_synthetic", {s: pred for s in seeds})

    # label preservation and realism, on the first n refined images
    n = p.get(f"{key}.realism_n", int, positive)
    with open_dataset(data_path(task, "synthetic")) as ds:
        syn = ds.read(None, slice(0, n))
    with open_dataset(data_path(task, "refined")) as ds:
        ref = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    with open_dataset(data_path(task, "real")) as ds:
        real = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    img = "images" if task == "gaze" else "depth"
    if task == "gaze":
        label_pres = {"pupil_shift_px": dict(zip(("mean", "std"), M.pupil_shift_px(syn[img], ref)))}
    else:
        label_pres = {"joint_depth_shift": {"mean": M.joint_depth_shift(syn[img], ref, syn["joints"])}}
    steps = p.get(f"{key}.realism_steps", int, positive)
    realism = {
        f"{name}_vs_real_acc_pct": M.mean_std([M.realism_accuracy(real, other, task, seed=s, steps=steps) for s in seeds[:1]])["mean"]
        for name, other in (("refined", ref), ("synthetic", syn[img]))
    }

    main_metric = "mean_error_deg" if task == "gaze" else "pck5_pct"
    gain = {}
    for size in sorted({v["size"] for v in task_variants(p, task).values()}):
        s, r = rows.get(f"synthetic_{size}x"), rows.get(f"refined_{size}x")
        if s and r:
            a, b = s[main_metric]["mean"], r[main_metric]["mean"]
            gain[f"refined_vs_synthetic_{size}x_rel_pct"] = 100.0 * ((a - b) / a if task == "gaze" else (b - a) / max(a, 1e-9))
    metrics = {"rows": rows, "label_preservation": label_pres, "realism": realism, "gain": gain,
               "seeds": len(seeds), "profile": p.get("profile", str, default="default")}
    write_json_atomic(Path("metrics") / f"{task}.json", metrics)

    thresholds = GAZE_THRESHOLDS if task == "gaze" else HAND_THRESHOLDS
    col = "threshold_deg" if task == "gaze" else "threshold_px"
    curve_df = pd.DataFrame({col: thresholds, **{k: np.round(v, 3) for k, v in curves.items()}})
    write_text_atomic(Path("plots") / task / ("error_cdf.csv" if task == "gaze" else "pck.csv"), curve_df.to_csv(index=False))
    with atomic_path(Path("reports") / task / "predictions.parquet", suffix=".parquet") as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    curves_figure(Path("reports") / task / "curves.png", task, curve_df, col)
    size_figure(Path("reports") / task / "size.png", task, rows, main_metric)
    print(f"evaluate {task}: " + ", ".join(f"{k} {v[main_metric]['mean']:.2f}±{v[main_metric]['std']:.2f}" for k, v in rows.items()))


if __name__ == "__main__":
    run_stage(main)
