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
from simgan.evaluation import SPLITS, evaluate_task, gain, results_markdown, variant_rows

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
    """The four data files of a gaze task (refined = synthetic a little brighter, same labels) and
    one estimator per (variant, seed), trained for two steps."""
    root = tmp_path_factory.mktemp("gaze")
    arrays = {"synthetic": _gaze_arrays(48, 1), "real": _gaze_arrays(40, 2), "real_test": _gaze_arrays(24, 3)}
    arrays["refined"] = {
        **arrays["synthetic"],
        "images": np.minimum(arrays["synthetic"]["images"].astype(np.int16) + 3, 255).astype(np.uint8),
    }
    files = {}
    for split in SPLITS:
        files[split] = root / f"{split}.h5"
        domain = {"real_test": "real", "refined": "refined"}.get(split, split)
        write_dataset(
            files[split], arrays[split], dict(task="gaze", domain=domain, source="test", generator_version="t", seed=0)
        )
    models = {
        name: {
            s: train_estimator(
                "gaze",
                arrays[v["source"]]["images"],
                arrays[v["source"]]["gaze"],
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
    assert list(m) == ["rows", "label_preservation", "realism", "gain", "seeds", "profile"]
    assert list(m["rows"]) == ["synthetic_1x", "refined_1x", "constant", "knn_synthetic"]
    assert m["seeds"] == 2 and m["profile"] == "test" and result.columns is None
    # a trained row is each seed's own test error, as mean +- std over the seeds
    test = arrays["real_test"]
    per_seed = [
        M.gaze_summary(
            M.angular_error_deg(predict(models["gaze-synthetic-1x"][s], "gaze", test["images"]), test["gaze"])
        )
        for s in SEEDS
    ]
    for metric in per_seed[0]:
        assert m["rows"]["synthetic_1x"][metric] == M.mean_std([s[metric] for s in per_seed]), metric
    # the baselines are deterministic: every seed gives the same prediction, so the std is 0
    assert all(v["std"] == 0 for row in ("constant", "knn_synthetic") for v in m["rows"][row].values())
    # the gain: how much lower the refined row's mean error is, in % of the synthetic row's
    a, b = m["rows"]["synthetic_1x"]["mean_error_deg"]["mean"], m["rows"]["refined_1x"]["mean_error_deg"]["mean"]
    assert m["gain"] == {"refined_vs_synthetic_1x_rel_pct": pytest.approx(100 * (a - b) / a)}
    assert set(m["label_preservation"]["pupil_shift_px"]) == {"mean", "std"}
    assert set(m["realism"]) == {"refined_vs_real_acc_pct", "synthetic_vs_real_acc_pct"}
    assert all(0 <= v <= 100 for v in m["realism"].values())
    # one curve column per row, one prediction row per (test image, row, seed)
    assert list(result.curves.columns) == ["threshold_deg", *m["rows"]] and len(result.curves) == 31
    assert len(result.predictions) == 24 * 4 * 2
    assert list(result.predictions.columns) == ["index", "row", "seed", "error", "pred_0", "pred_1", "pred_2"]


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
    assert "| synthetic_1x |" in results_markdown("blobs", m, result.columns)


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
