"""Whole-pipeline replicates (issue 19): each seed k of params.yaml `seeds` is one run of the
method -- its own GAN (seed gan.<task>.train.seed + k), refined set and estimators.

* A replicate depends on its seed only: replicate 1 of `seeds: [0, 1]` (two forked workers) is
  replicate 1 of `seeds: [1]` (this process), and replicates 0 and 1 train different GANs.
* A grown `seeds` reuses the finished replicates: their kept checkpoints are not trained again and
  their refiners are rewritten with the same bytes.
* A variant's `data` (dvc.yaml's estimator dep) must be its source's file or folder, and a refined
  variant's seed k trains on replicate k's refined set."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_determinism import gaze_arrays, tiny_workdir

from simgan.config import Params, ParamsError
from simgan.data.format import open_dataset, write_dataset
from simgan.estimators import EstimatorConfig, load_estimator, train_estimator
from simgan.train import SimGANTrainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages import adversarial, estimator, pretrain  # noqa: E402
from stages.gan_setup import build_trainer  # noqa: E402


def _set_params(root: Path, **top) -> dict:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(top)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def _gan_stages(root: Path, monkeypatch, seeds: list[int], workers: int = 1) -> dict[str, str]:
    """The GAN stages of `seeds`: in this process with one worker; with more, as `dvc repro` runs
    them, in a fresh process that forks its workers (a fork of this test process would inherit
    the open DVC state databases of earlier in-process tests: sqlite 'disk I/O error'). Returns
    each forked stage's stderr."""
    monkeypatch.chdir(root)
    _set_params(root, seeds=seeds, compute={"threads": 1, "workers": workers})
    if workers == 1:
        pretrain.main(["gaze"])
        adversarial.main(["gaze"])
        return {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    err = {}
    for stage in ("pretrain", "adversarial"):
        r = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}", "gaze"], cwd=root, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr[-3000:]
        err[stage] = r.stderr
    return err


def _refiner_weights(root: Path, seed: int) -> dict:
    path = root / "models" / "gaze" / "refiners" / f"seed{seed}.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _checkpoints(root: Path) -> dict[str, tuple[int, str]]:
    """name -> (mtime_ns, sha256) of every kept running checkpoint."""
    return {
        f.name: (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted((root / ".simgan" / "checkpoints").iterdir())
    }


def test_a_replicate_depends_on_its_seed_only_and_replicates_differ(tmp_path, monkeypatch):
    both = tiny_workdir(tmp_path / "both")
    err = _gan_stages(both, monkeypatch, [0, 1], workers=2)  # side by side in forked workers
    # the stage's bar counts both workers' training steps, not finished replicates
    cfg = build_trainer("gaze", Params.load(), checkpoint=None, progress=False).cfg
    for stage, steps in (("pretrain", cfg.adversarial_start), ("adversarial", cfg.steps)):
        assert re.search(rf"{stage} gaze: 100%.*\b{2 * steps}/{2 * steps} \[", err[stage]), err[stage][-1500:]
    alone = tiny_workdir(tmp_path / "alone")
    _gan_stages(alone, monkeypatch, [1])  # in this process
    assert sorted(f.name for f in (alone / "models" / "gaze" / "refiners").iterdir()) == ["seed1.pt"]

    assert _same_weights(_refiner_weights(both, 1), _refiner_weights(alone, 1))
    assert not _same_weights(_refiner_weights(both, 0), _refiner_weights(both, 1))
    for seed in (0, 1):  # the other files of a replicate are its own too
        assert (both / "plots" / "gaze" / "train_losses" / f"seed{seed}.csv").stat().st_size > 0
        assert (both / "reports" / "gaze" / "samples" / f"seed{seed}.png").stat().st_size > 0
    assert (both / "plots/gaze/train_losses/seed1.csv").read_bytes() == (
        alone / "plots/gaze/train_losses/seed1.csv"
    ).read_bytes()
    assert (both / "plots/gaze/train_losses/seed0.csv").read_bytes() != (
        both / "plots/gaze/train_losses/seed1.csv"
    ).read_bytes()

    # replicate k's GAN seed is gan.<task>.train.seed + k: replicate 0 of base seed 1 trains
    # replicate 1's GAN of base seed 0 (same weights; only the file's replicate key differs)
    shifted = tiny_workdir(tmp_path / "shifted")
    params = yaml.safe_load((shifted / "params.yaml").read_text())
    base = params["gan"]["gaze"]["train"]["seed"]
    params["gan"]["gaze"]["train"]["seed"] = base + 1
    (shifted / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _gan_stages(shifted, monkeypatch, [0])
    assert _same_weights(_refiner_weights(shifted, 0), _refiner_weights(both, 1))
    monkeypatch.chdir(both)
    p = Params.load()
    for replicate in (0, 1, 3):
        assert (
            build_trainer("gaze", p, checkpoint=None, progress=False, replicate=replicate).cfg.seed == base + replicate
        )


def test_growing_seeds_reuses_the_finished_replicates(tmp_path, monkeypatch):
    root = tiny_workdir(tmp_path / "repo")
    trained = []  # the GAN seed of every training step this process runs (one worker: no fork)
    step = SimGANTrainer.train_step

    def counting_step(self):
        trained.append(self.cfg.seed)
        return step(self)

    monkeypatch.setattr(SimGANTrainer, "train_step", counting_step)
    _gan_stages(root, monkeypatch, [0])
    base = Params.load().get("gan.gaze.train.seed", int)
    total = build_trainer("gaze", Params.load(), checkpoint=None, progress=False).cfg.total_steps
    assert trained == [base] * total
    refiner0 = (root / "models/gaze/refiners/seed0.pt").read_bytes()
    kept = _checkpoints(root)
    assert [n.rsplit("-", 1)[0] for n in kept] == ["gaze-adversarial-seed0", "gaze-pretrain-seed0"], sorted(kept)

    trained.clear()
    _gan_stages(root, monkeypatch, [0, 1])
    assert trained == [base + 1] * total  # replicate 0 did not train again
    assert (root / "models/gaze/refiners/seed0.pt").read_bytes() == refiner0
    assert (root / "models/gaze/refiners/seed1.pt").exists()
    now = _checkpoints(root)
    assert {n: now[n] for n in kept} == kept  # neither rewritten nor touched
    assert len(now) == 4 and sum("-seed1-" in n for n in now) == 2, sorted(now)

    # and shrinking `seeds` prunes the checkpoints of the replicates no longer in it
    _gan_stages(root, monkeypatch, [1])
    assert sorted(_checkpoints(root)) == sorted(n for n in now if "-seed1-" in n)


def _variant_params(**variant) -> Params:
    return Params({"tasks": {"gaze": {}}, "variants": {"v": variant}}, "params.yaml")


@pytest.mark.parametrize(
    "source, data, expected",
    [
        ("synthetic", "gaze/real.h5", "gaze/synthetic.h5"),
        ("real", "gaze/real", "gaze/real.h5"),
        ("refined", "gaze/refined.h5", "gaze/refined"),
        ("refined", "gaze/refined/seed0.h5", "gaze/refined"),
    ],
)
def test_a_variant_whose_data_is_not_its_source_names_the_key_and_the_expected_value(source, data, expected):
    """dvc.yaml's estimator dep is data/${item.data}: a wrong one would leave a changed training set
    unnoticed by DVC."""
    with pytest.raises(ParamsError) as e:
        estimator.variant(_variant_params(task="gaze", source=source, data=data, size=1), "v")
    assert str(e.value) == f"params.yaml: key 'variants.v.data': expected one of [{expected!r}], got {data!r}"
    with pytest.raises(ParamsError, match=r"key 'variants\.v\.data'"):  # a variant without one
        estimator.variant(_variant_params(task="gaze", source=source, size=1), "v")
    assert (
        estimator.variant(_variant_params(task="gaze", source=source, data=expected, size=1), "v")["source"] == source
    )


def test_a_refined_variant_trains_seed_k_on_replicate_k_refined_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attrs = dict(task="gaze", domain="refined", source="test", generator_version="t")
    sets = {}
    for seed in (0, 1):  # two replicates' refined sets, different images
        sets[seed] = gaze_arrays(40, seed=10 + seed)
        write_dataset(
            tmp_path / "data" / "gaze" / "refined" / f"seed{seed}.h5",
            sets[seed],
            {**attrs, "seed": seed},
            units={"difficulty": "au"},
        )
    section = {"base_n": 32, "steps": 2, "batch_size": 8, "lr": 0.001, "net": {"width": 0.25, "fc": 64}}
    params = {
        "tasks": {"gaze": {"curve": "error_cdf"}},
        "seeds": [0, 1],
        "compute": {"threads": 1, "workers": 1},
        "variants": {"r": {"task": "gaze", "source": "refined", "data": "gaze/refined", "size": 1}},
        "estimator": {"gaze": section},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    estimator.main(["r"])
    out = tmp_path / "models" / "gaze" / "estimators" / "r"
    cfg = EstimatorConfig.from_params(Params.load(), "gaze")
    for seed in (0, 1):
        model, meta = load_estimator(out / f"seed{seed}.pt")
        assert meta["train_file"] == f"data/gaze/refined/seed{seed}.h5" and meta["train_n"] == 32
        with open_dataset(meta["train_file"]) as ds:
            assert np.array_equal(ds["images"][:32], sets[seed]["images"][:32])
        ref, _ = train_estimator("gaze", sets[seed]["images"][:32], sets[seed]["gaze"][:32], cfg, seed=seed)
        assert _same_weights(model.state_dict(), ref.state_dict()), seed
    # a replicate without its refined set: the error names the file
    params["seeds"] = [0, 2]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(Exception, match=r"data/gaze/refined/seed2\.h5"):
        estimator.main(["r"])
