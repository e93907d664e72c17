"""Scoring one task's downstream estimators on the held-out real test set (the evaluate stage):
every trained variant and the baselines over the same seeds, aggregated as mean +- std, plus
label preservation, the automated visual Turing test and the refined-vs-synthetic gain
(Shrivastava et al. 2017, sections 4.1-4.2: the estimator trained on refined images against the
one trained on synthetic images, tested on real ones).

Each seed k of `seeds` is one whole-pipeline replicate: its own GAN, its own refined set
(files["refined"][k]) and, on it, the refined rows' estimator of seed k; the synthetic, real and
baseline rows use the same seeds, so every comparison pairs per replicate (`paired`,
PAIRED_RULE).

The metric keys are the documented ones (docs/compare.md): rows.<row>.<metric>.{mean,std,values},
label_preservation, realism (each with a `replicates` sub-dict: per-replicate values and their
std), gain, paired, seeds (the count), replicate_seeds, profile. A row is a variant's source,
size and augmentation (row_key: synthetic_1x, refined_aug_4x, ...) or a baseline (constant,
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
from simgan.estimators import features, load_estimator, predict, read_training_labels
from simgan.io import SimganError
from simgan.parallel import map_processes
from simgan.report import BEATS, NO_DIFFERENCE, NO_VERDICT, PAIRED_RULE, WORSE, paired_stats

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
    """{metric: {mean, std, values}}: mean +- std over the seeds (M.mean_std), and each seed's value
    in seed order."""
    return {k: {**M.mean_std([s[k] for s in per_seed]), "values": [float(s[k]) for s in per_seed]} for k in per_seed[0]}


def paired(rows: Mapping[str, Mapping], sizes, main_metric: str, lower_better: bool) -> dict[str, dict]:
    """paired_stats (the rule PAIRED_RULE, simgan.report) of refined_<n>x against synthetic_<n>x and of refined_aug_<n>x against
    synthetic_aug_<n>x, for each size where both rows exist, on the main metric; each entry also
    names its rows (a, b) and the metric."""
    out = {}
    for size in sorted(set(sizes)):
        for aug in ("", "_aug"):
            a, b = f"refined{aug}_{size}x", f"synthetic{aug}_{size}x"
            if a in rows and b in rows:
                stats = paired_stats(rows[a][main_metric]["values"], rows[b][main_metric]["values"], lower_better)
                out[f"{a.rsplit('_', 1)[0]}_vs_{b}"] = {"a": a, "b": b, "metric": main_metric, **stats}
    return out


def paired_sentence(p: Mapping, unit: str = "", digits: int = 2) -> str:
    """One sentence for a `paired` entry: the rule's outcome, the mean paired improvement ± its SE,
    and how many replicates agree."""
    size = p["b"].rsplit("_", 1)[1]
    a, b = p["a"].rsplit("_", 1)[0].replace("_", " "), p["b"].rsplit("_", 1)[0].replace("_", " ")
    u = f" {unit}" if unit else ""
    nums = f"mean paired improvement {p['mean']:.{digits}f}{u} ± {p['se']:.{digits}f} (SE)"
    agree = f"{p['agree']} of {p['n']} replicates agree"
    head = {
        BEATS: f"{a.capitalize()} beats {b} at {size}",
        WORSE: f"{a.capitalize()} is worse than {b} at {size}",
        NO_DIFFERENCE: f"{a.capitalize()} vs {b} at {size}: no difference beyond the spread",
        NO_VERDICT: f"{a.capitalize()} vs {b} at {size}: no verdict (one replicate; needs >= 2)",
    }[p["verdict"]]
    return f"{head}: {nums}, {agree}."


def user_scorer(truth: np.ndarray, columns: list[str], spread_of: np.ndarray | None = None):
    """score() for a user task: errors relative to the test set's spread of each column (the
    spread of `spread_of`'s columns when given: the oracle scores synthetic labels in the test
    set's units)."""
    spread = (truth if spread_of is None else spread_of).std(axis=0)
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
    """A user task's table (the paper's tables in reports/<task>/results.md cover gaze and hand
    only), each column with its unit, and the paired verdicts (PAIRED_RULE)."""
    cols = ["mae", "rmse"] + [f"mae_{c}" for c in columns]
    units = {"mae": "test-set stds", "rmse": "test-set stds", **{f"mae_{c}": "label units" for c in columns}}
    n = len(metrics.get("replicate_seeds") or []) or metrics["seeds"]
    lines = [
        f"# {task}: real test set",
        "",
        "mae / rmse: over all label columns, in test-set stds (each column's error divided by the test "
        f"set's std of that column); mae_<column>: in that column's label units. Mean ± std over {n} "
        "whole-pipeline replicate(s) (each its own GAN, refined set and estimator).",
        "",
        "| row | " + " | ".join(f"{c} ({units[c]})" for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, row in metrics["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]['mean']:.4g} ± {row[c]['std']:.2g}" for c in cols) + " |")
    lp, realism = metrics["label_preservation"], metrics["realism"]
    rep = realism.get("replicates", {})

    def acc(key: str) -> str:
        std = rep.get(key, {}).get("std")
        return f"{realism[key]:.1f}%" + (f" ± {std:.1f}" if std else "")

    lines += [
        "",
        f"Label columns identical after refinement: {lp['labels_identical_pct']:.0f}%; mean |pixel change| "
        f"{lp['pixel_change']['mean']:.2f} ± {lp['pixel_change']['std']:.2f} grey levels.",
        f"Visual Turing test (a fresh classifier, 50% = indistinguishable): refined vs real "
        f"{acc('refined_vs_real_acc_pct')}, synthetic vs real {acc('synthetic_vs_real_acc_pct')}"
        + (
            f"; pose-matched (the synthetic rows of the real labels): refined "
            f"{acc('refined_vs_real_pose_matched_acc_pct')}, synthetic {acc('synthetic_vs_real_pose_matched_acc_pct')}."
            if "refined_vs_real_pose_matched_acc_pct" in realism
            else "."
        ),
        "",
    ]
    oracle, kid = realism.get("oracle"), realism.get("kid")
    if oracle:
        o = {k: oracle[k]["mean"] for k in ("synthetic", "refined", "real", "refined_fraction")}
        lines += [
            f"Oracle score (the `{oracle['estimator']}` estimators, trained on real images only, against the "
            f"labels each image set keeps; mae in test-set stds): synthetic {o['synthetic']:.3f}, refined "
            f"{o['refined']:.3f}, real test set {o['real']:.3f}; refined gets {100 * o['refined_fraction']:.0f}% "
            f"of the way from synthetic to real, and lies between them on {oracle['refined_between']} of "
            f"{oracle['replicates']} replicates.",
            "",
        ]
    if kid:
        lines += [
            f"KID x 1000 to the real test set (lower is more real): synthetic {kid['synthetic']['mean']:.2f}, "
            f"refined {kid['refined']['mean']:.2f}, real vs real {kid['real_floor']['mean']:.2f} (the floor).",
            "",
        ]
    pairs = metrics.get("paired") or {}
    if pairs:
        lines += [f"Refined vs synthetic, on mae (test-set stds), per replicate: {PAIRED_RULE}.", ""]
        lines += [f"- {paired_sentence(p, 'test-set stds', 3)}" for p in pairs.values()]
        lines.append("")
    return "\n".join(lines)


def real_reference_row(variants: Mapping[str, Mapping]) -> str | None:
    """The variant whose estimators were trained on real images only, at the smallest size and
    without augmentation: its networks are the oracle and the KID feature extractor. None when
    the task trains no real variant (then neither score is computed)."""
    real = [(v["size"], name) for name, v in variants.items() if v["source"] == "real" and not v.get("augment")]
    return min(real)[1] if real else None


# KID draws: 50 subsets of 250 images of each set. Real-vs-real on the 1000 hand test images
# (two disjoint halves of 500) is the smallest pair, and 250 leaves each draw half of its half.
KID_SUBSET, KID_SUBSETS = 250, 50


def oracle_scores(
    models: Mapping[int, nn.Module],
    kind: str,
    synthetic: np.ndarray,
    refined: Mapping[int, np.ndarray],
    synthetic_scorer,
    main_metric: str,
    real_values: list[float],
    seeds: list[int],
) -> dict:
    """The oracle score (pix2pix / CycleGAN's FCN-score: Isola et al. 2017, Zhu et al. 2017): the
    estimators trained on real images only, replicate k's on replicate k's refined images, scored
    against the synthetic labels those images keep; the same for the raw synthetic images, and
    the real row on the real test set. Refined images that look real to a real-trained model
    score between synthetic and real: `refined_between` counts the replicates where they do, and
    `refined_fraction` is how far from synthetic to real refined gets, (syn - ref) / (syn - real)
    per replicate (1 = as good as real, 0 = no better than synthetic, < 0 = worse)."""
    syn_vals, ref_vals = [], []
    for seed in seeds:
        syn_vals.append(float(synthetic_scorer(predict(models[seed], kind, synthetic))[0][main_metric]))
        ref_vals.append(float(synthetic_scorer(predict(models[seed], kind, refined[seed]))[0][main_metric]))
    real_vals = [float(v) for v in real_values]
    fractions = [(s - r) / (s - q) if s != q else 0.0 for s, r, q in zip(syn_vals, ref_vals, real_vals)]
    between = sum(min(s, q) <= r <= max(s, q) for s, r, q in zip(syn_vals, ref_vals, real_vals))

    def stat(values: list[float]) -> dict:
        return {**M.mean_std(values), "values": values}

    return {
        "metric": main_metric,
        "synthetic": stat(syn_vals),
        "refined": stat(ref_vals),
        "real": stat(real_vals),
        "refined_fraction": stat(fractions),
        "refined_between": int(between),
        "replicates": len(seeds),
    }


def kid_scores(
    models: Mapping[int, nn.Module],
    kind: str,
    synthetic: np.ndarray,
    refined: Mapping[int, np.ndarray],
    real_test: np.ndarray,
    seeds: list[int],
    subset_size: int = KID_SUBSET,
    subsets: int = KID_SUBSETS,
) -> dict:
    """KID (M.kid) against the real test set, on the penultimate features of replicate k's
    real-trained estimator: synthetic and replicate k's refined images, and as the floor two
    disjoint halves of the real test set (real vs real). Per replicate the mean over the draws;
    {mean, std, values} over the replicates, and `subset_std`, the mean over the replicates of the
    std over draws (the estimator's own spread); all x 1000, as KID is usually reported."""
    half = len(real_test) // 2
    draws: dict[str, list[list[float]]] = {"synthetic": [], "refined": [], "real_floor": []}
    for seed in seeds:

        def feats(images: np.ndarray, seed: int = seed) -> np.ndarray:
            return features(models[seed], kind, images)

        def kid_x1000(a: np.ndarray, b: np.ndarray, seed: int = seed) -> list[float]:
            m = min(subset_size, len(a), len(b))
            return [1000.0 * v for v in M.kid(a, b, subset_size=m, subsets=subsets, seed=seed)]

        test = feats(real_test)
        draws["synthetic"].append(kid_x1000(feats(synthetic), test))
        draws["refined"].append(kid_x1000(feats(refined[seed]), test))
        draws["real_floor"].append(kid_x1000(test[:half], test[half:]))
    result = {}
    for key, per_replicate in draws.items():
        means = [float(np.mean(d)) for d in per_replicate]
        spread = float(np.mean([M.mean_std(d)["std"] for d in per_replicate]))
        result[key] = {**M.mean_std(means), "values": means, "subset_std": spread}
    return {**result, "scale": 1000, "subset_size": subset_size, "subsets": subsets}


def _estimator(model: str | os.PathLike | nn.Module, device: str) -> nn.Module:
    return model if isinstance(model, nn.Module) else load_estimator(model, device=device)[0]


_PREDICT: dict = {}  # set by evaluate_task before forking the prediction workers (as _REALISM)


def _predict_job(job: tuple[str, int]) -> np.ndarray:
    """job (variant, seed): that estimator's predictions on the test images."""
    r = _PREDICT
    name, seed = job
    return predict(_estimator(r["estimators"][name][seed], r["device"]), r["kind"], r["images"], device=r["device"])


_REALISM: dict = {}  # set by evaluate_task before forking the realism workers (fork: no pickling of images)


# realism classifier sources -> their keys under metrics["realism"]: the sets as they are, and
# pose-matched (the synthetic rows whose labels are nearest the real images', refined alike)
REALISM_SOURCES = {
    "refined": "refined_vs_real_acc_pct",
    "synthetic": "synthetic_vs_real_acc_pct",
    "refined_pose_matched": "refined_vs_real_pose_matched_acc_pct",
    "synthetic_pose_matched": "synthetic_vs_real_pose_matched_acc_pct",
}


# Restart r of a realism classifier trains from seed k + REALISM_RESTART_SEED_STRIDE * r, so
# restart 0 is the classifier of seed k (one restart: the numbers of a single classifier).
REALISM_RESTART_SEED_STRIDE = 1000


def _realism_pair(job: tuple[str, int, int]) -> float:
    """job (source, seed, restart): the classifier of `source` (a REALISM_SOURCES name; refined:
    replicate `seed`'s refined set) against real, trained from seed + stride * restart."""
    r = _REALISM
    source, seed, restart = job
    other = r[source][seed] if source.startswith("refined") else r[source]
    classifier_seed = seed + REALISM_RESTART_SEED_STRIDE * restart
    return M.realism_accuracy(r["real"], other, r["kind"], seed=classifier_seed, steps=r["steps"])


def _match_labels(ds, kind: str, task: str, rows: slice | None, head_pose: bool) -> np.ndarray:
    """The labels pose matching compares, (N, K), read from the open data set `ds`: the estimator's
    labels, and the head pose beside them where both sets have one (the embedded eyes: gaze alone
    leaves the head's pose a cue)."""
    labels, _ = read_training_labels(ds, kind, rows, name=task)
    out = [np.asarray(labels, np.float64).reshape(len(labels), -1)]
    if head_pose:
        out.append(np.asarray(ds.read(["head_pose"], rows)["head_pose"], np.float64).reshape(len(labels), -1))
    return np.concatenate(out, axis=1)


def _over_replicates(per_replicate: list[dict]) -> tuple[dict, dict]:
    """Per-replicate label-preservation dicts -> (the mean dict, the `replicates` sub-dict).

    A number is averaged over the replicates; a {mean, std} dict becomes {mean: mean of the
    replicates' means, std: mean of their stds (the within-replicate spread, e.g. over images)}.
    replicates.<key>: {std, values} of the replicates' numbers (their means for a dict)."""
    first, out, reps = per_replicate[0], {}, {}
    for key, v in first.items():
        if isinstance(v, Mapping):
            out[key] = {k: float(np.mean([r[key][k] for r in per_replicate])) for k in v}
            values = [float(r[key]["mean"]) for r in per_replicate]
        else:
            out[key] = float(np.mean([r[key] for r in per_replicate]))
            values = [float(r[key]) for r in per_replicate]
        reps[key] = {"std": M.mean_std(values)["std"], "values": values}
    return out, reps


def evaluate_task(
    task: str,
    kind: str,
    files: Mapping[str, str | os.PathLike | Mapping[int, str | os.PathLike]],
    variants: Mapping[str, Mapping],
    estimators: Mapping[str, Mapping[int, str | os.PathLike | nn.Module]],
    *,
    seeds: list[int],
    base_n: int,
    realism_n: int,
    realism_steps: int,
    realism_restarts: int = 1,
    realism_recheck_below: float = 100.0,
    knn_k: int | None = None,
    knn_train_n: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    workers: int = 1,
    profile: str = "default",
) -> TaskEvaluation:
    """Score task `task` (its kind: gaze, hand or generic) on `files["real_test"]`.

    files: the task's data files by split (SPLITS); files["refined"] maps each seed of `seeds` to
    that replicate's refined file (a missing seed is a SimganError naming it). variants: name ->
    {source, size, augment} of the task's trained variants; estimators: name -> seed -> the
    estimator (a model file or a model) for each seed in `seeds` (a refined variant's seed k
    trained on refined file k). The baselines are deterministic, so each seed gets the same
    prediction (std 0 by construction): the constant (mean-label) predictor of the first `base_n`
    synthetic labels, and for gaze with `knn_k` the k-NN over the first `knn_train_n` synthetic
    images. Label preservation and realism use the first `realism_n` images of each set, per
    replicate: for seed k, refined file k against the synthetic file (label preservation) and
    against real (realism), and synthetic against real, both classifiers trained `realism_steps`
    steps from seed k; an accuracy under `realism_recheck_below` % is rechecked by the classifier
    of seed k + 1000, then k + 2000, ..., up to `realism_restarts` in all, and the best counts;
    with a labelled real set (a real variant) the same on pose-matched sets (REALISM_SOURCES); the
    classifiers run side by side in `workers` processes of `threads` torch threads (the same
    numbers as in one process). The keys keep their meaning as
    means over the replicates (realism.replicates / label_preservation.replicates hold each
    replicate's value); `paired` compares refined with synthetic per replicate (PAIRED_RULE)."""
    main_metric, lower_better, _, col, thresholds = CURVES[kind]
    if isinstance(realism_restarts, bool) or not isinstance(realism_restarts, int) or realism_restarts < 1:
        raise SimganError(f"realism_restarts: expected an integer >= 1, got {realism_restarts!r}")
    if not 0 <= realism_recheck_below <= 100:
        raise SimganError(f"realism_recheck_below: expected a percentage in [0, 100], got {realism_recheck_below!r}")
    rows_of = variant_rows(variants)
    refined_files = files["refined"]
    if not isinstance(refined_files, Mapping):
        raise SimganError(
            f"files['refined']: expected a mapping seed -> that replicate's refined file, got {refined_files!r}"
        )
    missing = [seed for seed in seeds if seed not in refined_files]
    if missing:
        raise SimganError(
            f"files['refined']: expected a refined file for every replicate seed {list(seeds)}, "
            f"missing seed(s) {missing}"
        )
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

    # trained variants, every (variant, seed) side by side in the workers (CUDA does not survive a
    # fork: one process there); the real reference row's models score the refined images too
    global _PREDICT
    _PREDICT = {"estimators": estimators, "kind": kind, "images": test_images, "device": device}
    jobs = [(name, seed) for name in rows_of for seed in seeds]
    preds = dict(map_processes(_predict_job, jobs, workers if device == "cpu" else 1, threads))
    for name, row in rows_of.items():
        record(row, {seed: preds[(name, seed)] for seed in seeds})
    reference = real_reference_row(variants)
    reference_models = {seed: _estimator(estimators[reference][seed], device) for seed in seeds} if reference else {}

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

    # label preservation and realism per replicate, on the first n images of each refined file
    n = realism_n
    with open_dataset(files["synthetic"]) as ds:
        img = ds.image_key
        syn = ds.read(None if kind != "generic" else [img], slice(0, n))
    refs = {}
    for seed in seeds:
        with open_dataset(refined_files[seed]) as ds:
            refs[seed] = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    with open_dataset(files["real"]) as ds:
        real = ds.read([ds.image_key], slice(0, n))[ds.image_key]
    per_replicate = []
    for seed in seeds:
        ref = refs[seed]
        if kind == "gaze":
            per_replicate.append({"pupil_shift_px": dict(zip(("mean", "std"), M.pupil_shift_px(syn[img], ref)))})
        elif kind == "hand":
            per_replicate.append({"joint_depth_shift": {"mean": M.joint_depth_shift(syn[img], ref, syn["joints"])}})
        else:
            per_replicate.append(user_label_preservation(files["synthetic"], refined_files[seed], n))
    label_pres, lp_reps = _over_replicates(per_replicate)
    label_pres["replicates"] = lp_reps
    global _REALISM
    _REALISM = {"real": real, "refined": refs, "synthetic": syn[img], "kind": kind, "steps": realism_steps}
    sources = ["refined", "synthetic"]
    if reference is not None:  # the real set has labels: match the poses too
        with open_dataset(files["synthetic"]) as s_ds, open_dataset(files["real"]) as r_ds:
            head_pose = "head_pose" in s_ds and "head_pose" in r_ds
            matched_images = s_ds[img]
            rows_matched = M.pose_matched_rows(
                _match_labels(s_ds, kind, task, None, head_pose),
                _match_labels(r_ds, kind, task, slice(0, min(len(real), len(matched_images))), head_pose),
            )
        _REALISM["synthetic_pose_matched"] = matched_images[rows_matched]
        _REALISM["refined_pose_matched"] = {}
        for seed in seeds:
            with open_dataset(refined_files[seed]) as ds:
                _REALISM["refined_pose_matched"][seed] = ds[ds.image_key][rows_matched]
        sources += ["refined_pose_matched", "synthetic_pose_matched"]
    # a classifier that failed to train reads near 50%, as a realistic set would: an accuracy under
    # realism_recheck_below gets the next restart's classifier, up to realism_restarts, and the
    # best counts (the Turing test asks whether any classifier tells the sets apart)
    best: dict[tuple[str, int], float] = {}
    pending = [(source, seed) for seed in seeds for source in sources]
    for restart in range(realism_restarts):
        if not pending:
            break
        jobs = [(source, seed, restart) for source, seed in pending]
        for (source, seed, _), acc in map_processes(_realism_pair, jobs, workers, threads):
            best[(source, seed)] = max(best.get((source, seed), -1.0), float(acc))
        pending = [key for key in pending if best[key] < realism_recheck_below]
    realism, realism_reps = {}, {}
    for source in sources:
        values = [best[(source, seed)] for seed in seeds]
        key = REALISM_SOURCES[source]
        realism[key] = float(np.mean(values))
        realism_reps[key] = {"std": M.mean_std(values)["std"], "values": values}
    realism["replicates"] = realism_reps
    realism["restarts"] = int(realism_restarts)
    realism["recheck_below_pct"] = float(realism_recheck_below)
    if reference is not None:
        with open_dataset(files["synthetic"]) as ds:
            syn_truth, _ = read_training_labels(ds, kind, slice(0, n), name=task)
        syn_scorer = (
            user_scorer(syn_truth, columns, spread_of=truth)
            if kind == "generic"
            else (lambda pred: score(task, pred, syn_truth))
        )
        ref_row = rows_of[reference]
        realism["oracle"] = oracle_scores(
            reference_models, kind, syn[img], refs, syn_scorer, main_metric, rows[ref_row][main_metric]["values"], seeds
        )
        realism["oracle"]["estimator"] = ref_row
        realism["kid"] = kid_scores(reference_models, kind, syn[img], refs, test_images, seeds)
        realism["kid"]["features"] = f"{ref_row} estimator, penultimate layer"

    metrics = {
        "rows": rows,
        "label_preservation": label_pres,
        "realism": realism,
        "gain": gain(rows, [v["size"] for v in variants.values()], main_metric, lower_better),
        "paired": paired(rows, [v["size"] for v in variants.values()], main_metric, lower_better),
        "seeds": len(seeds),
        "replicate_seeds": [int(seed) for seed in seeds],
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
