"""The CUDA path: the same loops with a device string (simgan/device.py), checked against the CPU.

The GPU tests skip where no GPU is present, as on CI; on a GPU machine run `pytest tests/test_cuda.py`.
What a GPU user relies on: the same draws and so the same training as on the CPU up to float
rounding, checkpoints that move between a GPU and a CPU-only machine, refined files equal to the
CPU's, and device keys in params.yaml that fail clearly where there is no GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_refine import _gaze_file

from simgan.config import Params, ParamsError
from simgan.data.format import open_dataset
from simgan.estimators import load_estimator, predict, train_estimator
from simgan.nets import Refiner
from simgan.refine import refine_dataset
from simgan.train import SimGANTrainer, TrainConfig, build_networks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # stages/ runs as `python -m stages...` from the root
from stages.common import device_param

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def exact_fp32():
    """TF32 matmuls and convolutions round to 10 mantissa bits: the CPU comparison needs full fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _gan(device, checkpoint, **cfg):
    g = torch.Generator().manual_seed(0)
    syn = torch.randint(0, 256, (64, 1, 35, 55), dtype=torch.uint8, generator=g)
    real = torch.randint(0, 256, (64, 1, 35, 55), dtype=torch.uint8, generator=g)
    r, d, _, _ = build_networks(
        "gaze", "cpu", seed=0, refiner={"channels": 8, "blocks": 2}, discriminator={"width": 0.25}
    )
    config = TrainConfig(
        **{
            **dict(
                steps=4,
                pretrain_refiner_steps=3,
                pretrain_discriminator_steps=2,
                batch_size=8,
                history_size=16,
                checkpoint_every=100,
                log_every=1,
                seed=5,
                device=device,
            ),
            **cfg,
        }
    )
    return SimGANTrainer(r, d, syn, real, config, checkpoint_path=checkpoint, progress=False)


LOSSES = ("loss_refiner_reg", "loss_refiner_adv", "loss_disc")


@needs_cuda
def test_gan_training_on_cuda_follows_the_cpu_run(tmp_path, exact_fp32):
    cpu = _gan("cpu", tmp_path / "cpu.pt").run()
    gpu = _gan("cuda", tmp_path / "gpu.pt").run()
    # the batches, history draws and initial weights come from CPU generators: the same run
    assert [r["phase"] for r in cpu] == [r["phase"] for r in gpu]
    for a, b in zip(cpu, gpu):
        for k in LOSSES:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=2e-3, abs=1e-4), (a["step"], k)


@needs_cuda
def test_a_gan_trained_on_cuda_resumes_on_the_cpu(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first = _gan("cuda", ckpt, steps=2, bf16=True, channels_last=True)
    first.run()
    assert first.buffer.images.is_cuda
    resumed = _gan("cpu", ckpt, steps=4, bf16=True, channels_last=True)
    assert resumed.maybe_resume() and resumed.step == 7
    rows = resumed.run()
    assert resumed.step == 9 and not resumed.buffer.images.is_cuda
    assert all(np.isfinite(r[k]) for r in rows for k in LOSSES if k in r)


@needs_cuda
def test_refine_dataset_on_cuda_writes_the_cpu_bytes(tmp_path, exact_fp32):
    src = tmp_path / "syn.h5"
    _gaze_file(src, n=200)
    torch.manual_seed(0)
    refiner = Refiner(channels=8, blocks=2).eval()
    outs = {}
    for name, kw in {"cpu": {}, "cuda": {"device": "cuda"}, "compiled": {"device": "cuda", "compile": True}}.items():
        refine_dataset(src, tmp_path / f"{name}.h5", refiner, batch_size=48, progress=False, **kw)
        with open_dataset(tmp_path / f"{name}.h5") as ds:
            outs[name] = ds["images"].astype(np.int16)
    for name in ("cuda", "compiled"):
        diff = np.abs(outs[name] - outs["cpu"])
        # rounding to uint8 can flip at a .5 boundary under a different summation order, no more
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999, name


@needs_cuda
@pytest.mark.parametrize("task", ["gaze", "hand"])
def test_estimators_train_and_predict_on_cuda_like_on_cpu(task, exact_fp32):
    rng = np.random.default_rng(1)
    if task == "gaze":
        pytest.importorskip("kornia")
        from simgan.augment import photometric_augment

        images = rng.integers(0, 256, (96, 35, 55), dtype=np.uint8)
        labels = rng.normal(size=(96, 3)).astype(np.float32)
        labels /= np.linalg.norm(labels, axis=1, keepdims=True)
        kw = dict(net_kwargs={"width": 0.25, "fc": 64}, augment=photometric_augment("gaze", {}), rotation_deg=0.0)
    else:
        images = rng.uniform(-1, 1, (96, 64, 64)).astype(np.float32)
        labels = np.concatenate([rng.uniform(8, 56, (96, 14, 2)), rng.uniform(-1, 1, (96, 14, 1))], -1).astype(
            np.float32
        )
        kw = dict(
            net_kwargs={"stacks": 2, "channels": 8, "in_size": 64, "heatmap_size": 16, "depth": 2}, rotation_deg=20.0
        )
    runs = {
        dev: train_estimator(
            task, images, labels, steps=4, batch_size=16, lr=1e-3, seed=2, device=dev, log_every=1, **kw
        )
        for dev in ("cpu", "cuda")
    }
    (_, h_cpu), (m_gpu, h_gpu) = runs["cpu"], runs["cuda"]
    assert np.allclose([h["loss"] for h in h_cpu], [h["loss"] for h in h_gpu], rtol=2e-3)
    assert next(m_gpu.parameters()).is_cuda
    # one set of weights, two devices: the predictions agree
    p_gpu = predict(m_gpu, task, images[:40], device="cuda")
    p_cpu = predict(m_gpu.cpu(), task, images[:40])
    assert np.allclose(p_gpu, p_cpu, atol=1e-3)


def test_device_keys_name_themselves_when_no_such_device():
    p = Params({"refine": {"device": "gpu"}, "estimator": {"gaze": {"device": "cuda"}}})
    with pytest.raises(
        ParamsError, match=r"key 'refine.device': expected 'cpu', 'cuda', 'cuda:N' or 'auto', got 'gpu'"
    ):
        device_param(p, "refine.device")
    assert device_param(Params({}), "refine.device") == "cpu"  # the default
    if torch.cuda.is_available():
        assert device_param(p, "estimator.gaze.device") == "cuda"
    else:
        with pytest.raises(
            ParamsError, match=r"key 'estimator.gaze.device': 'cuda' requested but CUDA is not available here"
        ):
            device_param(p, "estimator.gaze.device")


@needs_cuda
def test_the_estimator_stage_trains_its_seeds_on_cuda(tmp_path, monkeypatch):
    import yaml

    from stages import estimator as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "gaze").mkdir(parents=True)
    _gaze_file(tmp_path / "data" / "gaze" / "synthetic.h5", n=64)
    params = {
        "tasks": {"gaze": {"curve": "error_cdf"}},
        "seeds": [0, 1],
        "compute": {"threads": 1, "workers": 2},
        "variants": {
            "gaze-synthetic-1x": {"task": "gaze", "source": "synthetic", "data": "gaze/synthetic.h5", "size": 1}
        },
        "estimator": {
            "gaze": {
                "base_n": 48,
                "steps": 3,
                "batch_size": 16,
                "lr": 0.001,
                "net": {"width": 0.25, "fc": 64},
                "bf16": True,
                "channels_last": True,
                "device": "cuda",
            }
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main(["gaze-synthetic-1x"])  # two workers asked for: CUDA does not survive a fork, so they take turns
    out = tmp_path / "models" / "gaze" / "estimators" / "gaze-synthetic-1x"
    assert sorted(f.name for f in out.iterdir()) == ["history.json", "seed0.pt", "seed1.pt"]
    for seed in (0, 1):  # a synthetic variant's seeds share one training file
        assert load_estimator(out / f"seed{seed}.pt")[1]["train_file"] == "data/gaze/synthetic.h5"
