"""Screen GAN settings by their downstream effect: a quality screen, not a speed benchmark.

    .venv/bin/python -m benchmarks.screen_gan CONFIGS.json [--procs 8] [--device cuda] [--threads 2]
        [--out screen.jsonl]

Run from the repository root after `dvc repro prepare` (it reads params.yaml and data/<task>/).
CONFIGS.json is a list of jobs; each one is either a GAN to train and judge,
    {"tag": "steps600", "task": "hand", "gan_seed": 0, "train": {"steps": 600},
     "refiner": {"channels": 32, "noise_channels": 0}, "disc": {"width": 1.0}, "est": {}}
(keys over params.yaml's gan.<task> and estimator.<task> sections), or a baseline,
    {"tag": "synthetic", "task": "hand", "baseline": "synthetic"}      (or "real").
A GAN job trains the refiner from scratch (pretraining included), refines the 1x training set
(estimator.<task>.base_n rows) and trains the task's estimator on it with seeds 0, 1 and 2; the
score is the mean over those seeds on the real test set (gaze: mean angular error, degrees; hand:
% of joints within 5 px). One line of JSON per job goes to stdout and to --out.

Jobs run in --procs spawned processes: on a GPU several small GANs share the device. Results on a
GPU are not bit-identical to the CPU pipeline's, and a repeated job moves by about a point (hand),
so compare settings over several GAN seeds (docs/experiments.md, session 4).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import time

import numpy as np

_DATA: dict = {}
ESTIMATOR_SEEDS = (0, 1, 2)


def _data(task: str) -> dict:
    from simgan.data.format import open_dataset

    if task not in _DATA:
        out = {}
        for split in ("synthetic", "real", "real_test"):
            with open_dataset(f"data/{task}/{split}.h5", require_labels=False) as ds:
                out[split], out["image_key"] = ds.read(None), ds.image_key
        _DATA[task] = out
    return _DATA[task]


def run_job(job: dict) -> dict:
    import torch
    import yaml

    from simgan import metrics as M
    from simgan.config import Params
    from simgan.data.format import images_to_tensor, tensor_to_images
    from simgan.estimators import EstimatorConfig, predict, train_estimator
    from simgan.refine import refine_batches
    from simgan.train import SimGANTrainer, TrainConfig, build_networks

    device, t0 = job["device"], time.time()
    torch.set_num_threads(job["threads"])
    task = job["task"]
    params = yaml.safe_load(open("params.yaml"))
    d = _data(task)
    ik, syn, real, test = d["image_key"], d["synthetic"], d["real"], d["real_test"]
    label = "gaze" if task == "gaze" else "joints"
    est = EstimatorConfig.from_params(
        Params({"estimator": {task: {**params["estimator"][task], **job.get("est", {})}}}), task
    )
    n = est.base_n

    def score(pred):
        if task == "gaze":
            return float(M.angular_error_deg(pred, test[label]).mean())
        return float(M.pck_at(pred, test[label][..., :2], 5))

    def estimator_scores(images, labels):
        out = []
        for seed in ESTIMATOR_SEEDS:
            model, _ = train_estimator(task, images, labels, est, seed=seed, device=device)
            out.append(score(predict(model, task, test[ik], device=device)))
        return out

    result = {
        "tag": job["tag"],
        "task": task,
        "gan_seed": job.get("gan_seed"),
        **{k: job.get(k) for k in ("train", "refiner", "disc", "est", "baseline")},
    }
    if job.get("baseline"):
        src = syn if job["baseline"] == "synthetic" else real
        result["scores"] = estimator_scores(src[ik][:n], src[label][:n])
    else:
        gan = copy.deepcopy(params["gan"][task])
        for key, section in (("train", "train"), ("refiner", "refiner"), ("disc", "discriminator")):
            gan[section].update(job.get(key) or {})
        cfg = TrainConfig(
            **{**gan["train"], "betas": tuple(gan["train"]["betas"]), "seed": job["gan_seed"], "device": device}
        )
        refiner, disc, _, _ = build_networks(
            task, gan["preset"], seed=cfg.seed, refiner=gan["refiner"], discriminator=gan["discriminator"]
        )

        def as_tensor(x):
            return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)

        trainer = SimGANTrainer(refiner, disc, as_tensor(syn[ik]), as_tensor(real[ik]), cfg, progress=False)
        rows = [trainer.train_step() for _ in range(cfg.total_steps)]
        refiner = trainer.output_refiner.eval()
        with torch.no_grad():
            x = images_to_tensor(syn[ik][:n], task)
            refined = tensor_to_images(
                refine_batches(
                    refiner,
                    x,
                    256,
                    torch.device(device),
                    cfg.bf16,
                    cfg.channels_last,
                    noise_seed=params["refine"].get("seed", 0),
                ),
                task,
            )
        late = [r for r in rows[-50:] if "disc_acc_real" in r]
        result["disc_acc_real"] = float(np.mean([r["disc_acc_real"] for r in late]))
        result["disc_acc_refined"] = float(np.mean([r["disc_acc_refined"] for r in late]))
        scale = 127.5 if task == "gaze" else 1.0  # mean |refined - synthetic| on the networks' [-1, 1] scale
        result["change"] = float(
            np.abs(refined[:500].astype(np.float32) - syn[ik][:500].astype(np.float32)).mean() / scale
        )
        if task == "gaze":
            result["pupil_shift_px"] = float(M.pupil_shift_px(syn[ik][:1000], refined[:1000])[0])
        # the realism classifier as the evaluate stage runs it (its first realism_n images, seed =
        # the replicate's), so a job's number compares with metrics/<task>.json's realism
        ev = params["evaluate"][task]
        result["realism_acc_pct"] = float(
            M.realism_accuracy(
                real[ik][: ev["realism_n"]],
                refined[: ev["realism_n"]],
                task,
                seed=job["gan_seed"],
                steps=ev["realism_steps"],
            )
        )
        result["scores"] = estimator_scores(refined, syn[label][:n])
    result["mean"] = float(np.mean(result["scores"]))
    result["seconds"] = round(time.time() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.screen_gan", description=__doc__.splitlines()[0])
    p.add_argument("configs", help="a JSON list of jobs (see the module docstring)")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default="screen.jsonl", help="appended to, one JSON line per job")
    args = p.parse_args(argv)
    with open(args.configs) as f:
        jobs = [{**job, "device": args.device, "threads": args.threads} for job in json.load(f)]
    ctx = mp.get_context("spawn")  # CUDA does not survive a fork
    with ctx.Pool(max(1, args.procs), maxtasksperchild=4) as pool, open(args.out, "a") as out:
        for result in pool.imap_unordered(run_job, jobs):
            line = json.dumps(result)
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
