"""simgan.evaluation: a task scored from tiny data files and estimators, without the stage; and
the evaluate stage's variants checked before any scoring."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from simgan import metrics as M
from simgan.config import Params, ParamsError
from simgan.data.format import write_dataset
from simgan.estimators import predict, save_estimator, train_estimator
from simgan.evaluation import SPLITS, evaluate_task, gain, paired, results_markdown, variant_rows
from simgan.io import SimganError
from simgan.report import BEATS, NO_DIFFERENCE, NO_VERDICT, WORSE, paired_stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages.evaluate import task_variants

SEEDS = [0, 1]
VARIANTS = {
    "gaze-synthetic-1x": {"task": "gaze", "source": "synthetic", "size": 1, "augment": False},
    "gaze-refined-1x": {"task": "gaze", "source": "refined", "size": 1, "augment": False},
}


def _gaze_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3))
    g[:, 2] = -np.abs(g[:, 2]) - 1
    return {
        "images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8),
        "gaze": (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def gaze_task(tmp_path_factory):
    """The data files of a gaze task, one refined file per replicate seed (replicate k's refined set
    = synthetic brighter by 3 (k + 1) grey levels, same labels), and one estimator per (variant,
    seed), trained for two steps; a refined variant's seed k trains on refined set k."""
    root = tmp_path_factory.mktemp("gaze")
    arrays = {"synthetic": _gaze_arrays(48, 1), "real": _gaze_arrays(40, 2), "real_test": _gaze_arrays(24, 3)}
    refined = {
        k: {
            **arrays["synthetic"],
            "images": np.minimum(arrays["synthetic"]["images"].astype(np.int16) + 3 * (k + 1), 255).astype(np.uint8),
        }
        for k in SEEDS
    }
    files = {"refined": {}}
    for split in SPLITS:
        for k in SEEDS if split == "refined" else [None]:
            path = root / (f"{split}.h5" if k is None else f"refined_seed{k}.h5")
            domain = {"real_test": "real", "refined": "refined"}.get(split, split)
            write_dataset(
                path,
                arrays[split] if k is None else refined[k],
                dict(task="gaze", domain=domain, source="test", generator_version="t", seed=0),
            )
            if k is None:
                files[split] = path
            else:
                files["refined"][k] = path
    arrays["refined"] = refined
    models = {
        name: {
            s: train_estimator(
                "gaze",
                (arrays["refined"][s] if v["source"] == "refined" else arrays[v["source"]])["images"],
                arrays["synthetic"]["gaze"] if v["source"] == "refined" else arrays[v["source"]]["gaze"],
                steps=2,
                batch_size=8,
                lr=1e-3,
                seed=s,
                net_kwargs={"width": 0.25},
            )[0]
            for s in SEEDS
        }
        for name, v in VARIANTS.items()
    }
    return files, models, arrays


def _evaluate(files, models, **kw):
    return evaluate_task(
        "gaze",
        "gaze",
        files,
        VARIANTS,
        models,
        seeds=SEEDS,
        base_n=32,
        realism_n=32,
        realism_steps=2,
        knn_k=3,
        knn_train_n=32,
        profile="test",
        **kw,
    )


def test_evaluate_task_scores_every_row_over_the_seeds(gaze_task):
    files, models, arrays = gaze_task
    result = _evaluate(files, models)
    m = result.metrics
    assert list(m) == [
        "rows",
        "label_preservation",
        "realism",
        "gain",
        "paired",
        "seeds",
        "replicate_seeds",
        "profile",
    ]
    assert list(m["rows"]) == ["synthetic_1x", "refined_1x", "constant", "knn_synthetic"]
    assert m["seeds"] == 2 and m["replicate_seeds"] == SEEDS and m["profile"] == "test" and result.columns is None
    # a trained row is each seed's own test error, as mean +- std over the seeds
    test = arrays["real_test"]
    per_seed = [
        M.gaze_summary(
            M.angular_error_deg(predict(models["gaze-synthetic-1x"][s], "gaze", test["images"]), test["gaze"])
        )
        for s in SEEDS
    ]
    for metric in per_seed[0]:
        values = [s[metric] for s in per_seed]
        assert m["rows"]["synthetic_1x"][metric] == {**M.mean_std(values), "values": values}, metric
    # the baselines are deterministic: every seed gives the same prediction, so the std is 0
    assert all(v["std"] == 0 for row in ("constant", "knn_synthetic") for v in m["rows"][row].values())
    # the gain: how much lower the refined row's mean error is, in % of the synthetic row's
    a, b = m["rows"]["synthetic_1x"]["mean_error_deg"]["mean"], m["rows"]["refined_1x"]["mean_error_deg"]["mean"]
    assert m["gain"] == {"refined_vs_synthetic_1x_rel_pct": pytest.approx(100 * (a - b) / a)}
    assert m["paired"]["refined_vs_synthetic_1x"]["values"] == pytest.approx(
        [
            m["rows"]["synthetic_1x"]["mean_error_deg"]["values"][k]
            - m["rows"]["refined_1x"]["mean_error_deg"]["values"][k]
            for k in range(2)
        ]
    )
    assert set(m["label_preservation"]["pupil_shift_px"]) == {"mean", "std"}
    assert set(m["realism"]) == {
        "refined_vs_real_acc_pct",
        "synthetic_vs_real_acc_pct",
        "replicates",
        "restarts",
        "recheck_below_pct",
    }
    assert all(0 <= m["realism"][k] <= 100 for k in ("refined_vs_real_acc_pct", "synthetic_vs_real_acc_pct"))
    # one curve column per row, one prediction row per (test image, row, seed)
    assert list(result.curves.columns) == ["threshold_deg", *m["rows"]] and len(result.curves) == 31
    assert len(result.predictions) == 24 * 4 * 2
    assert list(result.predictions.columns) == ["index", "row", "seed", "error", "pred_0", "pred_1", "pred_2"]


def test_each_replicate_is_scored_with_its_own_refined_file(gaze_task, monkeypatch):
    """Replicate k: the refined row's seed-k estimator (trained on refined file k), and refined file
    k's label preservation and realism (its classifiers trained from seed k), in seed order. The
    realism classifier is replaced by one whose answer tells which images and seed it got (two
    training steps cannot tell these sets apart: every accuracy would be 50)."""
    files, models, arrays = gaze_task

    def fake_realism(real, other, kind, *, seed, steps):
        return float(np.mean(other)) + 1000.0 * seed

    monkeypatch.setattr(M, "realism_accuracy", fake_realism)
    m = _evaluate(files, models).metrics
    test = arrays["real_test"]
    n = 32
    syn = arrays["synthetic"]["images"][:n]
    reps = m["realism"]["replicates"]
    for i, k in enumerate(SEEDS):
        ref = arrays["refined"][k]["images"][:n]
        err = M.angular_error_deg(predict(models["gaze-refined-1x"][k], "gaze", test["images"]), test["gaze"])
        assert m["rows"]["refined_1x"]["mean_error_deg"]["values"][i] == pytest.approx(float(err.mean()))
        assert reps["refined_vs_real_acc_pct"]["values"][i] == pytest.approx(np.mean(ref) + 1000.0 * k)
        assert reps["synthetic_vs_real_acc_pct"]["values"][i] == pytest.approx(np.mean(syn) + 1000.0 * k)
        shift = m["label_preservation"]["replicates"]["pupil_shift_px"]["values"][i]
        assert shift == pytest.approx(M.pupil_shift_px(syn, ref)[0])
    for key in ("refined_vs_real_acc_pct", "synthetic_vs_real_acc_pct"):
        values = reps[key]["values"]
        assert m["realism"][key] == pytest.approx(np.mean(values))
        assert reps[key]["std"] == pytest.approx(np.std(values, ddof=1))
    shifts = m["label_preservation"]["replicates"]["pupil_shift_px"]
    assert m["label_preservation"]["pupil_shift_px"]["mean"] == pytest.approx(np.mean(shifts["values"]))
    assert shifts["std"] == pytest.approx(np.std(shifts["values"], ddof=1))


def test_a_realism_accuracy_under_the_recheck_bar_gets_more_classifiers_and_the_best_counts(gaze_task, monkeypatch):
    """Replicate k's classifiers train from seed k; one under realism_recheck_below is rechecked
    from seeds k + 1000, k + 2000, ... up to realism_restarts, and the best counts: a classifier
    that failed to train (50%) is not read as realism, and one that told the sets apart is not
    retrained."""
    files, models, _ = gaze_task
    seen = []

    def fake_realism(real, other, kind, *, seed, steps):
        seen.append(seed)
        # replicate 0 fails from seeds 0 and 1000; replicate 1 trains at once
        return {0: 50.0, 1000: 52.0, 2000: 95.0}.get(seed, 99.0)

    monkeypatch.setattr(M, "realism_accuracy", fake_realism)
    one = _evaluate(files, models).metrics["realism"]
    assert one["restarts"] == 1 and one["replicates"]["refined_vs_real_acc_pct"]["values"] == [50.0, 99.0]
    seen.clear()
    three = _evaluate(files, models, realism_restarts=3, realism_recheck_below=90).metrics["realism"]
    assert three["restarts"] == 3 and three["recheck_below_pct"] == 90
    assert sorted(seen) == [0, 0, 1, 1, 1000, 1000, 2000, 2000]  # refined and synthetic, replicate 1 once
    for key in ("refined_vs_real_acc_pct", "synthetic_vs_real_acc_pct"):
        assert three["replicates"][key]["values"] == [95.0, 99.0]
    seen.clear()
    lenient = _evaluate(files, models, realism_restarts=3, realism_recheck_below=40).metrics["realism"]
    assert sorted(seen) == [0, 0, 1, 1] and lenient["replicates"]["refined_vs_real_acc_pct"]["values"] == [50.0, 99.0]
    with pytest.raises(SimganError, match="realism_restarts: expected an integer >= 1, got 0"):
        _evaluate(files, models, realism_restarts=0)
    with pytest.raises(SimganError, match=r"realism_recheck_below: expected a percentage in \[0, 100\], got 120"):
        _evaluate(files, models, realism_recheck_below=120)


def test_a_missing_replicate_refined_file_is_an_error_naming_its_seed(gaze_task):
    files, models, _ = gaze_task
    with pytest.raises(SimganError, match=r"missing seed\(s\) \[1\]"):
        _evaluate({**files, "refined": {0: files["refined"][0]}}, models)
    with pytest.raises(SimganError, match="expected a mapping seed"):
        _evaluate({**files, "refined": files["refined"][0]}, models)


def test_paired_stats_follow_the_rule():
    # a small but consistent improvement (lower is better: synthetic - refined > 0 in every replicate)
    p = paired_stats([9.0, 9.1, 8.9], [9.5, 9.6, 9.4], lower_better=True)
    assert p["values"] == pytest.approx([0.5, 0.5, 0.5]) and p["verdict"] == BEATS
    assert p["n"] == 3 and p["agree"] == 3 and p["std"] == pytest.approx(0.0, abs=1e-12)
    p = paired_stats([60.0, 61.0, 62.5], [59.0, 59.5, 60.0], lower_better=False)  # higher is better
    assert p["values"] == pytest.approx([1.0, 1.5, 2.5]) and p["verdict"] == BEATS
    assert p["se"] == pytest.approx(np.std([1.0, 1.5, 2.5], ddof=1) / np.sqrt(3))
    # mixed signs: no result, however large the mean
    p = paired_stats([8.0, 10.5, 7.0], [10.0, 10.0, 10.0], lower_better=True)
    assert p["values"] == pytest.approx([2.0, -0.5, 3.0]) and p["verdict"] == NO_DIFFERENCE and p["agree"] == 2
    # every replicate worse, consistently
    assert paired_stats([10.0, 10.2, 10.1], [9.0, 9.1, 9.0], lower_better=True)["verdict"] == WORSE
    # all one sign but the mean within two standard errors
    assert paired_stats([0.1, 0.1, 5.0], [0.0, 0.0, 0.0], lower_better=False)["verdict"] == NO_DIFFERENCE
    # one replicate: no verdict
    p = paired_stats([9.0], [10.0], lower_better=True)
    assert p == {"values": [1.0], "mean": 1.0, "std": 0.0, "se": 0.0, "n": 1, "agree": 1, "verdict": NO_VERDICT}
    with pytest.raises(ValueError, match="equal"):
        paired_stats([1.0, 2.0], [1.0], lower_better=True)


def test_paired_blocks_per_size_and_augmentation():
    def row(*values):
        return {"mae": {"mean": float(np.mean(values)), "std": 0.0, "values": list(values)}}

    rows = {
        "synthetic_1x": row(1.0, 1.1),
        "refined_1x": row(0.8, 0.85),
        "synthetic_aug_1x": row(1.0, 1.0),
        "refined_aug_1x": row(1.1, 0.9),
        "synthetic_2x": row(1.0, 1.0),  # no refined_2x
    }
    out = paired(rows, [1, 1, 2], "mae", lower_better=True)
    assert list(out) == ["refined_vs_synthetic_1x", "refined_aug_vs_synthetic_aug_1x"]
    assert out["refined_vs_synthetic_1x"]["a"] == "refined_1x" and out["refined_vs_synthetic_1x"]["metric"] == "mae"
    assert out["refined_vs_synthetic_1x"]["verdict"] == BEATS
    assert out["refined_aug_vs_synthetic_aug_1x"]["verdict"] == NO_DIFFERENCE


def test_estimator_files_score_as_the_models_they_hold(gaze_task, tmp_path):
    files, models, _ = gaze_task
    paths = {}
    for name, by_seed in models.items():
        for s, model in by_seed.items():
            save_estimator(tmp_path / name / f"seed{s}.pt", model)
            paths.setdefault(name, {})[s] = tmp_path / name / f"seed{s}.pt"
    assert _evaluate(files, paths).metrics == _evaluate(files, models).metrics


def test_a_user_task_is_scored_per_label_column(tmp_path):
    rng = np.random.default_rng(0)
    files, arrays = {}, {}
    for split in SPLITS:
        arrays[split] = {
            "images": rng.integers(0, 256, (20, 36, 48), dtype=np.uint8),
            "labels/x": rng.normal(size=20),
            "labels/y": rng.normal(10, 3, size=20),
        }
        files[split] = tmp_path / f"{split}.h5"
    arrays["refined"] = {**arrays["synthetic"], "images": arrays["synthetic"]["images"] // 2}
    for split in SPLITS:
        write_dataset(
            files[split],
            arrays[split],
            dict(task="generic", domain="real", source="folder", generator_version="t", seed=-1),
        )
    files["refined"] = {0: files["refined"]}
    variants = {"blobs-synthetic-1x": {"task": "blobs", "source": "synthetic", "size": 1}}
    labels = np.stack([arrays["synthetic"]["labels/x"], arrays["synthetic"]["labels/y"]], 1)
    model, _ = train_estimator(
        "generic",
        arrays["synthetic"]["images"],
        labels,
        steps=1,
        batch_size=4,
        lr=1e-3,
        seed=0,
        net_kwargs={"width": 0.25},
        columns=["x", "y"],
    )
    result = evaluate_task(
        "blobs",
        "generic",
        files,
        variants,
        {"blobs-synthetic-1x": {0: model}},
        seeds=[0],
        base_n=10,
        realism_n=8,
        realism_steps=1,
    )
    m = result.metrics
    assert result.columns == ["x", "y"] and list(m["rows"]) == ["synthetic_1x", "constant"]
    assert {"mae", "rmse", "mae_x", "rmse_x", "mae_y", "rmse_y"} <= set(m["rows"]["constant"])
    lp = m["label_preservation"]
    assert lp["labels_identical_pct"] == 100.0  # refinement copied both label columns byte for byte
    assert lp["pixel_change"]["mean"] == pytest.approx(
        np.mean(arrays["synthetic"]["images"][:8] - arrays["refined"]["images"][:8])
    )
    assert list(result.curves.columns) == ["threshold_std", "synthetic_1x", "constant"] and m["gain"] == {}
    assert {"pred_x", "pred_y"} <= set(result.predictions.columns)
    md = results_markdown("blobs", m, result.columns)
    assert "| synthetic_1x |" in md
    assert "| row | mae (test-set stds) | rmse (test-set stds) | mae_x (label units) | mae_y (label units) |" in md
    assert m["paired"] == {} and "beats" not in md
    # a refined row over three replicates: the paired verdict in words
    m2 = {
        **m,
        "replicate_seeds": [0, 1, 2],
        "paired": paired(
            {
                "synthetic_1x": {"mae": {"values": [1.0, 1.1, 1.05]}},
                "refined_1x": {"mae": {"values": [0.88, 0.97, 0.94]}},
            },
            [1],
            "mae",
            lower_better=True,
        ),
    }
    md = results_markdown("blobs", m2, result.columns)
    assert "Mean ± std over 3 whole-pipeline replicate(s)" in md
    assert (
        "- Refined beats synthetic at 1x: mean paired improvement 0.120 test-set stds ± 0.006 (SE), 3 of 3 replicates agree."
        in md
    )


def test_gain_is_the_relative_improvement_in_the_tasks_direction():
    rows = {
        "synthetic_1x": {"pck5_pct": {"mean": 50.0}},
        "refined_1x": {"pck5_pct": {"mean": 60.0}},
        "synthetic_3x": {"pck5_pct": {"mean": 70.0}},
    }
    assert gain(rows, [1, 3, 1], "pck5_pct", lower_better=False) == {
        "refined_vs_synthetic_1x_rel_pct": 20.0
    }  # no refined_3x row
    err = {"synthetic_4x": {"mae": {"mean": 2.0}}, "refined_4x": {"mae": {"mean": 1.5}}}
    assert gain(err, [4], "mae", lower_better=True) == {"refined_vs_synthetic_4x_rel_pct": 25.0}


def test_two_variants_on_one_row_are_an_error_naming_both():
    """A copy-pasted variant used to overwrite the synthetic_1x row and mix its rows into
    predictions.parquet."""
    variants = {
        "mytask-synthetic-1x": {"task": "mytask", "source": "synthetic", "size": 1},
        "mytask-refined-1x": {"task": "mytask", "source": "refined", "size": 1},
        "mytask-synthetic-bad-1x": {"task": "mytask", "source": "synthetic", "size": 1, "augment": False},
    }
    with pytest.raises(
        ValueError, match=r"'variants.mytask-synthetic-1x' and 'variants.mytask-synthetic-bad-1x'.*'synthetic_1x'"
    ):
        variant_rows(variants)
    p = Params({"variants": {**VARIANTS, **variants}}, "params.yaml")
    with pytest.raises(
        ParamsError, match=r"^params.yaml: keys 'variants.mytask-synthetic-1x' and 'variants.mytask-synthetic-bad-1x'"
    ):
        task_variants(p, "mytask")
    assert task_variants(p, "gaze") == VARIANTS  # another task's rows are its own
    # augmentation is a row of its own
    assert (
        variant_rows({**VARIANTS, "gaze-synthetic-aug-1x": {**VARIANTS["gaze-synthetic-1x"], "augment": True}})[
            "gaze-synthetic-aug-1x"
        ]
        == "synthetic_aug_1x"
    )


def _evaluate_with_a_real_row(files, models, arrays):
    """The task evaluated with a real variant too (estimators trained on the labelled real set
    for two steps): its models, and the metrics."""
    real = arrays["real"]
    real_models = {
        s: train_estimator(
            "gaze", real["images"], real["gaze"], steps=2, batch_size=8, lr=1e-3, seed=s, net_kwargs={"width": 0.25}
        )[0]
        for s in SEEDS
    }
    variants = {**VARIANTS, "gaze-real-1x": {"task": "gaze", "source": "real", "size": 1, "augment": False}}
    m = evaluate_task(
        "gaze",
        "gaze",
        files,
        variants,
        {**models, "gaze-real-1x": real_models},
        seeds=SEEDS,
        base_n=32,
        realism_n=32,
        realism_steps=2,
        profile="test",
    ).metrics
    return real_models, m


def test_the_oracle_and_kid_score_each_set_with_the_real_trained_estimators(gaze_task):
    """Issue 20's field-standard scores: replicate k's real-trained estimator on the synthetic and
    on replicate k's refined images, against the synthetic labels (the oracle), and its features
    for KID to the real test set, with the real-vs-real floor."""
    real_models, m = _evaluate_with_a_real_row(*gaze_task)
    files, models, arrays = gaze_task
    o = m["realism"]["oracle"]
    assert o["estimator"] == "real_1x" and o["metric"] == "mean_error_deg" and o["replicates"] == 2
    assert o["real"]["values"] == m["rows"]["real_1x"]["mean_error_deg"]["values"]
    syn = arrays["synthetic"]
    for k, s in enumerate(SEEDS):

        def err(images, s=s):
            return float(M.angular_error_deg(predict(real_models[s], "gaze", images[:32]), syn["gaze"][:32]).mean())

        assert o["synthetic"]["values"][k] == pytest.approx(err(syn["images"]))
        assert o["refined"]["values"][k] == pytest.approx(err(arrays["refined"][s]["images"]))
        a, b, q = o["synthetic"]["values"][k], o["refined"]["values"][k], o["real"]["values"][k]
        assert o["refined_fraction"]["values"][k] == pytest.approx((a - b) / (a - q))
    between = [
        min(a, q) <= b <= max(a, q) for a, b, q in zip(*(o[x]["values"] for x in ("synthetic", "refined", "real")))
    ]
    assert o["refined_between"] == sum(between)
    kid = m["realism"]["kid"]
    assert kid["features"].startswith("real_1x") and kid["scale"] == 1000
    assert all(len(kid[x]["values"]) == 2 for x in ("synthetic", "refined", "real_floor"))
    # a report shows both tables, and says where the order fails
    from simgan.report import realism_scores_md

    text = realism_scores_md({"gaze": m})
    assert "Oracle" in text and "KID x 1000" in text
    assert ("the order fails" in text) == (sum(between) < 2)


def test_pose_matched_realism_sets_the_synthetic_and_refined_rows_of_the_real_poses_against_real(
    gaze_task, monkeypatch
):
    """With a labelled real set, the realism classifiers run twice more per replicate: on the
    synthetic rows whose labels are nearest the real images' (each used once), and on replicate
    k's refined images of the same rows, so the poses alone give nothing away. The classifier is
    replaced by one whose answer tells which images and seed it got."""
    files, models, arrays = gaze_task

    def fake_realism(real, other, kind, *, seed, steps):
        return float(np.mean(other)) + 1000.0 * seed

    monkeypatch.setattr(M, "realism_accuracy", fake_realism)
    _, m = _evaluate_with_a_real_row(files, models, arrays)
    rows = M.pose_matched_rows(arrays["synthetic"]["gaze"], arrays["real"]["gaze"][:32])
    assert len(set(rows.tolist())) == 32 and sorted(rows.tolist()) != list(range(32))
    reps = m["realism"]["replicates"]
    for i, k in enumerate(SEEDS):
        synthetic, refined = arrays["synthetic"]["images"][rows], arrays["refined"][k]["images"][rows]
        assert reps["synthetic_vs_real_pose_matched_acc_pct"]["values"][i] == pytest.approx(
            np.mean(synthetic) + 1000.0 * k
        )
        assert reps["refined_vs_real_pose_matched_acc_pct"]["values"][i] == pytest.approx(np.mean(refined) + 1000.0 * k)
        # the sets as they are stay the first realism_n rows
        assert reps["synthetic_vs_real_acc_pct"]["values"][i] == pytest.approx(
            np.mean(arrays["synthetic"]["images"][:32]) + 1000.0 * k
        )
    # without a labelled real row there is nothing to match on
    assert "refined_vs_real_pose_matched_acc_pct" not in _evaluate(files, models).metrics["realism"]


def test_unrefined_images_score_as_synthetic_on_the_oracle(gaze_task):
    """A refiner that changes nothing gets none of the way to real, and counts as between."""
    from simgan.evaluation import oracle_scores

    _, models, arrays = gaze_task
    syn = arrays["synthetic"]
    nets = {s: models["gaze-synthetic-1x"][s] for s in SEEDS}

    def scorer(pred):
        err = M.angular_error_deg(pred, syn["gaze"])
        return M.gaze_summary(err), err, []

    o = oracle_scores(
        nets, "gaze", syn["images"], {s: syn["images"] for s in SEEDS}, scorer, "mean_error_deg", [1.0, 2.0], SEEDS
    )
    assert o["refined"]["values"] == o["synthetic"]["values"]
    assert o["refined_fraction"]["values"] == [0.0, 0.0] and o["refined_between"] == 2


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same = np.mean(M.kid(a, b, subset_size=200, subsets=20, seed=1))
    shifted = np.mean(M.kid(a, b + 0.5, subset_size=200, subsets=20, seed=1))
    assert abs(same) < 0.05 * shifted and shifted > 0
    assert M.kid(a, b, subset_size=200, subsets=3, seed=1) == M.kid(a, b, subset_size=200, subsets=3, seed=1)
    with pytest.raises(ValueError, match="subset_size"):
        M.kid(a, b[:10], subset_size=200)
    with pytest.raises(ValueError, match="one d"):
        M.kid(a, b[:, :8])


def test_scores_do_not_depend_on_the_worker_count(gaze_task):
    """Predictions and realism classifiers run side by side in forked workers; each is the same
    single-thread computation as in this process, so the metrics and predictions are identical."""
    files, models, _ = gaze_task
    one, two = _evaluate(files, models, workers=1), _evaluate(files, models, workers=2)
    assert one.metrics == two.metrics
    assert one.predictions.equals(two.predictions)
