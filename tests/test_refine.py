import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan.checkpoint import load_refiner, save_model
from simgan.config import Params, ParamsError
from simgan.data.format import open_dataset, write_dataset
from simgan.io import SimganError
from simgan.nets import Refiner
from simgan.refine import refine_batches, refine_dataset, refine_settings


def _gaze_file(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    g[:, 2] = -np.abs(g[:, 2]) - 1
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    arrays = {
        "images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8),
        "gaze": g.astype(np.float32),
        "pupil": rng.uniform(0, 50, (n, 2)).astype(np.float32),
        "labels/difficulty": rng.normal(size=n).astype(np.float64),
    }
    write_dataset(
        path,
        arrays,
        dict(task="gaze", domain="synthetic", source="test", generator_version="t", seed=seed),
        chunk_rows=64,
        units={"difficulty": "au"},
    )
    return arrays


@pytest.fixture(scope="module")
def refiner():
    torch.manual_seed(0)
    return Refiner(channels=8, blocks=2).eval()


def test_refined_file_keeps_labels_byte_for_byte(tmp_path, refiner):
    src, dst = tmp_path / "syn.h5", tmp_path / "ref.h5"
    arrays = _gaze_file(src)
    assert refine_dataset(src, dst, refiner, batch_size=50, progress=False) == 300
    with open_dataset(dst) as ds:
        assert ds.domain == "refined" and ds.n == 300
        for key in ("gaze", "pupil", "labels/difficulty"):
            assert ds[key].tobytes() == arrays[key].tobytes(), key
        assert ds.unit("labels/difficulty") == "au"
        refined = ds["images"]
    assert refined.shape == (300, 35, 55) and refined.dtype == np.uint8
    assert not np.array_equal(refined, arrays["images"])  # the refiner did act
    # and it acted per image exactly as the network does in memory
    x = torch.from_numpy(arrays["images"][:4]).float().div(127.5).sub(1).unsqueeze(1)
    with torch.no_grad():
        expected = torch.round((refiner(x) + 1) * 127.5).clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    assert np.array_equal(refined[:4], expected)


def test_shards_concatenate_to_the_whole_file(tmp_path, refiner):
    src = tmp_path / "syn.h5"
    _gaze_file(src, n=200)
    refine_dataset(src, tmp_path / "whole.h5", refiner, progress=False)
    parts = []
    for i, rows in enumerate((slice(0, 64), slice(64, 150), slice(150, 200))):
        refine_dataset(src, tmp_path / f"part{i}.h5", refiner, rows=rows, batch_size=32, progress=False)
        parts.append(open_dataset(tmp_path / f"part{i}.h5")["images"])
    assert np.concatenate(parts).tobytes() == open_dataset(tmp_path / "whole.h5")["images"].tobytes()


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_noise_refiner_gives_each_row_its_own_noise_whatever_the_batches_or_shards(tmp_path, where):
    torch.manual_seed(0)
    if where == "input":
        noisy = Refiner(channels=8, blocks=2, residual=True, noise_channels=1).eval()
    else:  # refiner.output_noise, at a level that survives the uint8 rounding
        noisy = Refiner(channels=8, blocks=2, residual=True, output_noise=True).eval()
        with torch.no_grad():
            noisy.noise_scale.bias.fill_(4.0)
    src = tmp_path / "syn.h5"
    _gaze_file(src, n=150)

    def images(name, **kw):
        refine_dataset(src, tmp_path / name, noisy, progress=False, **kw)
        return open_dataset(tmp_path / name)["images"]

    whole = images("whole.h5", batch_size=32, noise_seed=5)
    assert whole.tobytes() == images("other_batches.h5", batch_size=7, noise_seed=5).tobytes()
    parts = [
        images(f"part{i}.h5", rows=rows, batch_size=32, noise_seed=5)
        for i, rows in enumerate((slice(0, 64), slice(64, 150)))
    ]
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    # the seed draws the noise: another seed refines the same images differently
    assert not np.array_equal(images("seed6.h5", batch_size=32, noise_seed=6), whole)
    # rows that repeat an image still get their own noise (a deterministic refiner would repeat them)
    x = torch.from_numpy(np.repeat(open_dataset(src)["images"][:1], 2, axis=0)).float().div(127.5).sub(1).unsqueeze(1)
    y = refine_batches(noisy, x, 2, torch.device("cpu"), False, False, noise_seed=5)
    assert not torch.equal(y[0], y[1])


def test_bf16_path_stays_within_one_grey_level(tmp_path, refiner):
    src = tmp_path / "syn.h5"
    _gaze_file(src, n=128)
    refine_dataset(src, tmp_path / "fp32.h5", refiner, progress=False)
    refine_dataset(src, tmp_path / "bf16.h5", refiner, bf16=True, channels_last=True, progress=False)
    a = open_dataset(tmp_path / "fp32.h5")["images"].astype(int)
    b = open_dataset(tmp_path / "bf16.h5")["images"].astype(int)
    assert (np.abs(a - b) <= 1).mean() >= 0.99


def test_failed_refinement_leaves_existing_output_untouched(tmp_path, refiner):
    src, dst = tmp_path / "syn.h5", tmp_path / "ref.h5"
    _gaze_file(src, n=100)
    dst.write_bytes(b"previous result")

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        refine_dataset(src, dst, Exploding(), progress=False)
    assert dst.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left behind


def test_missing_input_names_the_file(tmp_path, refiner):
    with pytest.raises(Exception, match="nope.h5"):
        refine_dataset(tmp_path / "nope.h5", tmp_path / "out.h5", refiner, progress=False)


def _params(tmp_path):
    import yaml

    params = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "params.yaml"))
    # one replicate unless a test asks for more, run in this process (a forked worker's calls and
    # monkeypatches would not come back)
    params["seeds"] = [0]
    params["compute"] = {"threads": 1, "workers": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def _save_refiner(path, refiner, **meta):
    meta = {"task": "gaze", **meta}
    save_model(path, refiner, refiner_kwargs=dict(channels=8, blocks=2, kernel=3), in_channels=1, steps=5, **meta)


def _stage_module():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # stages/ is run from the root, not installed
    from stages import refine as stage

    return stage


def test_refine_settings_read_params_once_for_the_stage_the_shards_and_the_flow(tmp_path, refiner, monkeypatch):
    """stages/refine.py, `simgan refine` (sharded) and the Prefect flow all take their refine
    arguments from simgan.refine.refine_settings; `refine.compile` reaches refine_dataset there.
    Replicate k reads models/gaze/refiners/seed<k>.pt, writes data/gaze/refined/seed<k>.h5 and
    draws its noise from refine.seed + k."""
    import yaml

    stage = _stage_module()
    params = _params(tmp_path)
    for seed in (0, 1):
        _save_refiner(tmp_path / "models" / "gaze" / "refiners" / f"seed{seed}.pt", refiner)

    def settings(replicate=0, **refine):
        params["refine"].update(refine)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        return refine_settings(Params.load(tmp_path / "params.yaml"), "gaze", replicate, tmp_path)

    s = settings(compile=False)
    assert s["compile"] is False and s["batch_size"] == params["refine"]["batch_size"]
    assert s["extra_attrs"] == {"refiner_steps": 5, "refined_from": "data/gaze/synthetic.h5", "replicate": 0}
    assert s["dst"] == str(tmp_path / "data/gaze/refined/seed0.h5")
    assert s["refiner"] == str(tmp_path / "models/gaze/refiners/seed0.pt")
    assert settings(compile=True)["compile"] is True
    with pytest.raises(ParamsError, match="refine.compile"):
        settings(compile="yes")
    assert settings(compile=True, seed=7)["noise_seed"] == 7
    with pytest.raises(ParamsError, match="refine.seed"):
        settings(seed=-1)
    s1 = settings(replicate=1, compile=True, seed=7)
    assert s1["noise_seed"] == 8 and s1["extra_attrs"]["replicate"] == 1
    assert (s1["dst"], s1["refiner"]) == (
        str(tmp_path / "data/gaze/refined/seed1.h5"),
        str(tmp_path / "models/gaze/refiners/seed1.pt"),
    )
    # a replicate without a trained refiner: the message names its file and the replicate
    with pytest.raises(SimganError, match=r"refiners/seed2\.pt: file not found.*replicate 2"):
        settings(replicate=2)
    # the stage passes them on as they are, once per seed of `seeds`
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "refine_dataset", lambda src, dst, net, **kw: calls.append((src, dst, kw)) or 0)
    params["seeds"] = [0, 1]
    settings(compile=True, seed=7)
    stage.main(["gaze"])
    assert [(src, dst, kw["compile"], kw["noise_seed"]) for src, dst, kw in calls] == [
        ("data/gaze/synthetic.h5", "data/gaze/refined/seed0.h5", True, 7),
        ("data/gaze/synthetic.h5", "data/gaze/refined/seed1.h5", True, 8),
    ]


def test_a_refiner_of_another_task_is_refused_naming_the_file_and_both_tasks(tmp_path, refiner, monkeypatch):
    """A hand refiner copied to models/gaze/refiners/seed0.pt used to refine eye images with exit 0."""
    stage = _stage_module()
    _params(tmp_path)
    _gaze_file(tmp_path / "data" / "gaze" / "synthetic.h5", n=8)
    path = tmp_path / "models" / "gaze" / "refiners" / "seed0.pt"
    kwargs = dict(refiner_kwargs=dict(channels=8, blocks=2, kernel=3), in_channels=1, steps=5)
    monkeypatch.chdir(tmp_path)
    for meta, found in (({"task": "hand"}, "got 'hand'"), ({}, "key missing")):
        save_model(path, refiner, **meta, **kwargs)
        with pytest.raises(SimganError) as e:
            stage.main(["gaze"])
        assert str(e.value).startswith(str(Path("models/gaze/refiners/seed0.pt"))) and (
            "key 'task': expected 'gaze'" in str(e.value)
        ), e.value
        assert found in str(e.value)
        with pytest.raises(SimganError, match="key 'task'"):
            load_refiner(path, "gaze")
    assert not (tmp_path / "data" / "gaze" / "refined").exists()
    save_model(path, refiner, task="gaze", **kwargs)
    stage.main(["gaze"])
    with open_dataset(tmp_path / "data" / "gaze" / "refined" / "seed0.h5") as ds:
        assert ds.n == 8 and ds.attrs["refiner_steps"] == 5 and ds.attrs["replicate"] == 0


def test_simgan_refine_runs_the_stage_sharded_on_a_local_cluster(tmp_path, refiner, monkeypatch):
    """`simgan refine TASK --workers N` (was `python -m stages.refine_sharded`, a module in stages/
    that no stage of dvc.yaml runs): the same bytes as the refine stage, for every replicate."""
    import yaml

    from simgan.cli import main as simgan

    stage = _stage_module()
    params = _params(tmp_path)
    params["seeds"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _gaze_file(tmp_path / "data" / "gaze" / "synthetic.h5", n=200)
    for seed in (0, 1):
        torch.manual_seed(seed)  # the replicates' refiners differ, as two GANs' do
        _save_refiner(tmp_path / "models" / "gaze" / "refiners" / f"seed{seed}.pt", Refiner(channels=8, blocks=2))
    monkeypatch.chdir(tmp_path)
    stage.main(["gaze"])
    refined = tmp_path / "data" / "gaze" / "refined"
    whole = {seed: open_dataset(refined / f"seed{seed}.h5")["images"] for seed in (0, 1)}
    assert not np.array_equal(whole[0], whole[1])
    assert simgan(["refine", "gaze", "--workers", "1", "--shards", "3"]) == 0
    for seed in (0, 1):
        with open_dataset(refined / f"seed{seed}.h5") as ds:
            assert ds["images"].tobytes() == whole[seed].tobytes() and "rows" not in ds.attrs, seed
    # a task without a trained refiner: one line naming the file, exit 2
    assert simgan(["refine", "nope", "--workers", "1"]) == 2
    with pytest.raises(SystemExit):
        simgan(["refine", "gaze", "--workers", "0"])
