"""Issue 21: identical inputs, identical files. DVC decides what to rerun from file hashes, so a
stage that writes other bytes for the same inputs reruns everything downstream for nothing.

* The GAN stages run twice on the same data and params write the same files for every replicate:
  pretrained/seed<k>.pt, refiners/seed<k>.pt, train_losses/seed<k>.csv, samples/seed<k>.png and
  dvclive/seed<k>/ (no wall-clock time in a log row; torch.save through a file object, since
  torch names the records inside the zip after the temp file).
* The estimator stage run twice writes the same seed<k>.pt files and history.json.
* The sharded refinement's combined file is the one-process refinement's file byte for byte,
  with one shard and with several (docs/scale.md), and a data set file's bytes do not depend on
  the order its attrs were given in."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simgan.config import apply_profile
from simgan.data.format import write_dataset
from simgan.distributed import combine_shards, refine_shard, shard_jobs
from simgan.refine import refine_dataset
from simgan.train import build_networks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed


def md5s(root: Path, rels) -> dict[str, str]:
    out = {}
    for rel in rels:
        path = root / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


def gaze_arrays(n: int, seed: int, labelled: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8)}
    if labelled:
        g = rng.normal(size=(n, 3)).astype(np.float32)
        g[:, 2] = -np.abs(g[:, 2]) - 1  # looking at the camera
        arrays["gaze"] = g / np.linalg.norm(g, axis=1, keepdims=True)
        arrays["labels/difficulty"] = rng.normal(size=n)
    return arrays


def tiny_workdir(root: Path) -> Path:
    """A directory the stages run in: params.yaml on the tiny profile (one worker process) and
    small gaze data files; a git repository with a commit, which dvclive needs, and a DVC project,
    as every checkout of this one is. Without .dvc/, dvclive runs `dvc init` itself on start, and
    two replicate workers starting at once raced on it ('.dvc' exists, sqlite 'disk I/O error')."""
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    apply_profile(root / "params.yaml", ROOT / "profiles" / "tiny.yaml")
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(
        text.replace("compute: {threads: 1, workers: 3}", "compute: {threads: 1, workers: 1}")
    )
    attrs = dict(task="gaze", source="test", generator_version="t", seed=0)
    write_dataset(
        root / "data/gaze/synthetic.h5",
        gaze_arrays(96, 0),
        {**attrs, "domain": "synthetic"},
        units={"difficulty": "au"},
    )
    write_dataset(
        root / "data/gaze/real.h5",
        gaze_arrays(96, 1, labelled=False),
        {**attrs, "domain": "real"},
        require_labels=False,
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], cwd=root, check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, env=env, check=True)
    return root


GAN_OUTPUTS = (
    "models/gaze/pretrained",
    "models/gaze/refiners",
    "plots/gaze/train_losses",
    "reports/gaze/samples",
    "reports/gaze/dvclive",
)


def test_gan_stages_write_the_same_files_twice(tmp_path, monkeypatch):
    from stages import adversarial, pretrain

    runs = []
    for name in ("first", "second"):
        monkeypatch.chdir(tiny_workdir(tmp_path / name))
        pretrain.main(["gaze"])
        adversarial.main(["gaze"])
        runs.append(md5s(Path.cwd(), GAN_OUTPUTS))
    first, second = runs
    for seed in (0, 1):  # the tiny profile's two replicates
        for rel in (
            f"models/gaze/pretrained/seed{seed}.pt",
            f"models/gaze/refiners/seed{seed}.pt",
            f"plots/gaze/train_losses/seed{seed}.csv",
            f"reports/gaze/samples/seed{seed}.png",
            f"reports/gaze/dvclive/seed{seed}/metrics.json",
        ):
            assert rel in first, (rel, sorted(first))
    assert not [k for k in first if first[k] != second.get(k)], "rewritten with other bytes"
    header = (tmp_path / "first/plots/gaze/train_losses/seed0.csv").read_text().splitlines()[0]
    assert "seconds" not in header and header.startswith("step,phase,loss_refiner_adv"), header


def test_estimator_stage_writes_the_same_files_twice(tmp_path, monkeypatch):
    from stages import estimator

    runs = []
    for name in ("first", "second"):
        monkeypatch.chdir(tiny_workdir(tmp_path / name))
        estimator.main(["gaze-synthetic-1x"])
        runs.append(md5s(Path.cwd(), ["models/gaze/estimators/gaze-synthetic-1x"]))
    first, second = runs
    assert {"seed0.pt", "seed1.pt", "history.json"} == {Path(k).name for k in first}, sorted(first)
    assert not [k for k in first if first[k] != second[k]], "rewritten with other bytes"


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("noise_channels", [0, 1])
def test_sharded_refinement_is_the_one_process_file_byte_for_byte(tmp_path, noise_channels):
    src = tmp_path / "synthetic.h5"
    write_dataset(
        src,
        gaze_arrays(200, 0),
        dict(task="gaze", domain="synthetic", source="test", generator_version="t", seed=0),
        chunk_rows=32,
        units={"difficulty": "au"},
    )
    refiner, _, _, _ = build_networks(
        "gaze", "cpu", seed=0, refiner={"channels": 4, "blocks": 1, "noise_channels": noise_channels}
    )
    # what refine_settings passes: the stage's attrs on top of the source's
    kw = dict(
        batch_size=24,
        noise_seed=300,
        progress=False,
        extra_attrs={"refiner_steps": 4, "refined_from": "data/gaze/synthetic.h5", "replicate": 1},
    )
    refine_dataset(src, tmp_path / "refined.h5", refiner, **kw)
    for shards in (1, 3):
        folder = tmp_path / f"shards{shards}"
        folder.mkdir()
        jobs = shard_jobs(src, tmp_path / "unused.h5", shards, folder)
        assert len(jobs) == shards
        paths = [refine_shard(refiner=refiner, **job, **kw) for job in jobs]
        assert combine_shards(paths, tmp_path / f"combined{shards}.h5") == 200
        assert file_md5(tmp_path / f"combined{shards}.h5") == file_md5(tmp_path / "refined.h5"), f"{shards} shard(s)"


def test_data_set_file_bytes_do_not_depend_on_attr_order(tmp_path):
    arrays = gaze_arrays(40, 0)
    attrs = dict(
        task="gaze", domain="synthetic", source="test", generator_version="t", seed=0, refined_from="x.h5", extra=3
    )
    write_dataset(tmp_path / "a.h5", arrays, attrs, units={"difficulty": "au"})
    write_dataset(tmp_path / "b.h5", arrays, dict(reversed(list(attrs.items()))), units={"labels/difficulty": "au"})
    assert file_md5(tmp_path / "a.h5") == file_md5(tmp_path / "b.h5")
