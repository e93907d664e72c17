"""Refinement throughput (images/s) at the paper's gaze refiner: project path vs naive baseline.

    .venv/bin/python -m benchmarks.bench_refine [--n 1024] [--n-naive 128] [--repeats 3]
        [--threads 1] [--batch 256] [--variants] [--compile]

project: refine_dataset HDF5 -> HDF5 as the refine stage runs it, `bf16: auto` (bf16 autocast
         where oneDNN has AMX kernels, fp32 elsewhere) + channels_last, large batches, reads
         and writes overlapped with compute.
naive:   what a public port does: one PNG decoded with Pillow per image, fp32 NCHW forward one
         image at a time (and, as a fairer baseline, 16 at a time), one PNG written per image.
The matmul ceiling (in the precision `auto` picks) is measured interleaved with both, so
"fraction of ceiling" compares numbers taken under the same load. Also checks that the bf16 path stays within one grey level
of fp32 (the bar: >= 99% of pixels), on a random and on a briefly trained paper refiner.
--variants adds what else was tried (batch sizes, fp32 channels_last, bf16 NCHW, the previous
serial loop); --compile adds torch.compile (compile time reported separately).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import (
    bench_device,
    ceiling_fns,
    conv_flops,
    interleaved,
    load,
    machine,
    pop_ceiling,
    project_dtype,
    summary,
    table,
    threads,
    write_result,
)
from simgan.data.format import DatasetWriter, images_to_tensor, open_dataset, tensor_to_images
from simgan.nets import Refiner, refiner_preset
from simgan.refine import _refine_stored, refine_batches, refine_dataset


def make_source(tmp: Path, n: int) -> tuple[Path, list[Path]]:
    """A rendered gaze data set as HDF5, and the same images as PNG files for the naive path."""
    from simgan.sim.eyes import simulate_eyes_to_file

    src = tmp / "synthetic.h5"
    simulate_eyes_to_file(src, n, 0, workers=1, progress=False)
    png_dir = tmp / "png"
    png_dir.mkdir()
    paths = []
    with open_dataset(src) as ds:
        for i, img in enumerate(ds["images"]):
            p = png_dir / f"{i:06d}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
    return src, paths


def naive_refine(refiner: torch.nn.Module, pngs: list[Path], out_dir: Path, batch: int, device: torch.device) -> None:
    out_dir.mkdir(exist_ok=True)
    with torch.no_grad():
        for s in range(0, len(pngs), batch):
            group = pngs[s : s + batch]
            arr = np.stack([np.asarray(Image.open(p).convert("L")) for p in group])
            x = torch.from_numpy(arr).float().div(127.5).sub(1.0).unsqueeze(1).to(device)
            y = torch.round((refiner(x) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)[:, 0].cpu().numpy()
            for p, img in zip(group, y):
                Image.fromarray(img).save(out_dir / p.name)


def serial_refine(src: Path, dst: Path, refiner, batch_size: int, device, bf16: bool, channels_last: bool) -> None:
    """The library's loop before this benchmark: each chunk read, converted to float32 whole,
    refined, converted back and written, one after the other (no overlap)."""
    with open_dataset(src, require_labels=False) as ds:
        with DatasetWriter(dst, {**ds.attrs, "domain": "refined"}, chunk_rows=ds.chunk_rows, require_labels=False) as w:
            for block in ds.iter_chunks():
                x = images_to_tensor(block[ds.image_key], ds.task)
                block[ds.image_key] = tensor_to_images(
                    refine_batches(refiner, x, batch_size, device, bf16, channels_last), ds.task
                )
                w.append(block)


def grey_level_agreement(refiner: torch.nn.Module, images: np.ndarray, other: np.ndarray | None = None) -> dict:
    """Fraction of pixels where the bf16 + channels_last output (or `other`, refined elsewhere)
    is within 1 grey level of fp32."""
    dev = torch.device("cpu")
    fp32 = _refine_stored(copy.deepcopy(refiner).eval(), images, "gaze", 256, dev, False, False, pad=False).astype(
        np.int16
    )
    if other is None:
        cl = copy.deepcopy(refiner).eval().to(memory_format=torch.channels_last)
        other = _refine_stored(cl, images, "gaze", 256, dev, True, True, pad=False)
    d = np.abs(fp32 - other.astype(np.int16))
    return {
        "n_images": len(images),
        "within_1_grey_level": float((d <= 1).mean()),
        "max_diff": int(d.max()),
        "mean_abs_diff": float(d.mean()),
    }


def trained_a_little(refiner: Refiner, images: np.ndarray, steps: int = 6) -> Refiner:
    """A copy of `refiner` after a few Algorithm-1 iterations at a high learning rate, so its
    weights are no longer the initialisation (random weights can hide a precision problem)."""
    from simgan.nets import Discriminator, discriminator_preset
    from simgan.train import SimGANTrainer, TrainConfig

    torch.manual_seed(1)
    r = copy.deepcopy(refiner)
    t = torch.from_numpy(images).unsqueeze(1)
    cfg = TrainConfig(
        steps=steps,
        pretrain_refiner_steps=2,
        pretrain_discriminator_steps=1,
        batch_size=8,
        lr=1e-3,
        history_size=64,
        bf16=True,
        channels_last=True,
    )
    trainer = SimGANTrainer(
        r, Discriminator(**discriminator_preset("gaze", "paper")), t, t.flip(-1).contiguous(), cfg, progress=False
    )
    for _ in range(cfg.total_steps):
        trainer.train_step()
    return r.to(memory_format=torch.contiguous_format).eval()


def run(
    n: int = 1024,
    n_naive: int = 128,
    repeats: int = 3,
    n_threads: int = 1,
    batch: int = 32,
    variants: bool = False,
    compile: bool = False,
) -> dict:
    device = bench_device()
    load_before = load()
    torch.manual_seed(0)
    base = Refiner(**refiner_preset("gaze", "paper")).eval()
    flops = conv_flops(base, (1, 35, 55))["total"]
    dtype = project_dtype(device)
    report: dict = {
        "machine": machine(),
        "device": str(device),
        "threads": n_threads,
        "n": n,
        "n_naive": n_naive,
        "batch": batch,
        "repeats": repeats,
        "refiner_forward_gflop_per_image": flops / 1e9,
        "load_before": load_before,
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_refine_") as tmp_name, threads(n_threads):
        tmp = Path(tmp_name)
        src, pngs = make_source(tmp, n)
        with open_dataset(src) as ds:
            sample = ds["images"][:256]
        project_net = copy.deepcopy(base)
        naive_net = copy.deepcopy(base).to(device)
        part = slice(0, min(n, 2 * batch))

        def project(rows=None, **kw):
            opts = dict(batch_size=batch, device=str(device), bf16="auto", channels_last=True, progress=False) | kw
            return lambda: refine_dataset(src, tmp / "refined.h5", project_net, rows=rows, **opts)

        # Warm-up on a slice: oneDNN picks its kernels per shape on first use.
        project(part)()
        naive_refine(naive_net, pngs[:16], tmp / "naive_out", 1, device)
        naive_refine(naive_net, pngs[:16], tmp / "naive_out", 16, device)
        fns = {
            **ceiling_fns(device, dtype),
            "project": project(),
            "naive_b1": lambda: naive_refine(naive_net, pngs[:n_naive], tmp / "naive_out", 1, device),
            "naive_b16": lambda: naive_refine(naive_net, pngs[:n_naive], tmp / "naive_out", 16, device),
        }
        work = {"project": n, "naive_b1": n_naive, "naive_b16": n_naive}
        if variants:
            for b in sorted({32, 64, 1024} - {batch}):
                fns[f"project_b{b}"], work[f"project_b{b}"] = project(batch_size=b), n
            fns["fp32_cl"], work["fp32_cl"] = project(bf16=False), n
            fns["fp32_nchw"], work["fp32_nchw"] = project(bf16=False, channels_last=False), n
            nchw_net = copy.deepcopy(base)
            fns["bf16_nchw"], work["bf16_nchw"] = (
                (lambda: refine_dataset(src, tmp / "r2.h5", nchw_net, batch_size=batch, bf16=True, progress=False)),
                n,
            )
            cl_net = copy.deepcopy(base).to(memory_format=torch.channels_last)
            fns["serial_loop"], work["serial_loop"] = (
                (lambda: serial_refine(src, tmp / "r3.h5", cl_net, batch, device, True, True)),
                n,
            )
        if compile:
            compiled_net = copy.deepcopy(base)
            t0 = time.perf_counter()
            refine_dataset(
                src,
                tmp / "rc.h5",
                compiled_net,
                rows=part,
                batch_size=batch,
                bf16="auto",
                channels_last=True,
                compile=True,
                progress=False,
            )
            report["compile_first_call_s"] = time.perf_counter() - t0
            fns["compiled"], work["compiled"] = (
                (
                    lambda: refine_dataset(
                        src,
                        tmp / "rc.h5",
                        compiled_net,
                        batch_size=batch,
                        bf16="auto",
                        channels_last=True,
                        compile=True,
                        progress=False,
                    )
                ),
                n,
            )
        for f in ceiling_fns(device, dtype).values():
            f()
        times = interleaved(fns, repeats, warmup=1 if variants or compile else 0)
        report["ceiling_interleaved"] = pop_ceiling(times) | {"dtype": str(dtype).removeprefix("torch.")}
        ceiling = report["ceiling_interleaved"]["gflops"]
        for name, t in times.items():
            s = summary(t, work[name])
            gflops = s["per_s"] * flops / 1e9
            rows.append(
                {
                    "path": name,
                    "images": work[name],
                    "median_s": s["median_s"],
                    "all_s": s["all_s"],
                    "images_per_s": s["per_s"],
                    "gflops": gflops,
                    "fraction_of_ceiling": gflops / ceiling,
                }
            )
        by = {r["path"]: r for r in rows}
        for r in rows:
            r["x_naive_b1"] = r["images_per_s"] / by["naive_b1"]["images_per_s"]
            r["x_naive_b16"] = r["images_per_s"] / by["naive_b16"]["images_per_s"]
        if report.get("compile_first_call_s"):
            gain = by["compiled"]["images_per_s"] / by["project"]["images_per_s"]
            per_image_saved = 1 / by["project"]["images_per_s"] - 1 / by["compiled"]["images_per_s"]
            report["compile_pays_after_images"] = (
                report["compile_first_call_s"] / per_image_saved if per_image_saved > 0 else None
            )
            report["compile_speedup"] = gain
        if compile:
            with open_dataset(tmp / "rc.h5") as ds:
                report["accuracy_compiled"] = grey_level_agreement(base, sample, ds["images"][: len(sample)])
        report["accuracy_random_init"] = grey_level_agreement(base, sample)
        report["accuracy_trained"] = grey_level_agreement(trained_a_little(base, sample), sample)
    report["results"] = rows
    report["load_after"] = load()
    print(
        f"refinement, paper gaze refiner ({flops / 1e9:.3f} GFLOP/image), {n_threads} thread(s), device {device}, "
        f"{report['ceiling_interleaved']['dtype']} matmul ceiling {ceiling:.0f} GFLOP/s (interleaved)"
    )
    print(
        table(
            rows,
            [
                ("path", "path", "s"),
                ("images", "N", "d"),
                ("images_per_s", "img/s", ".1f"),
                ("gflops", "GFLOP/s", ".1f"),
                ("fraction_of_ceiling", "of ceiling", ".2f"),
                ("x_naive_b1", "x naive b1", ".2f"),
                ("x_naive_b16", "x naive b16", ".2f"),
            ],
        )
    )
    if "compile_first_call_s" in report:
        print(
            f"torch.compile: first call {report['compile_first_call_s']:.1f} s, speed-up {report['compile_speedup']:.2f}x, "
            f"pays after {report['compile_pays_after_images'] or float('inf'):.0f} images"
        )
    for k in [k for k in report if k.startswith("accuracy_")]:
        a = report[k]
        print(
            f"bf16 vs fp32 ({k.split('_', 1)[1]}): {100 * a['within_1_grey_level']:.3f}% of pixels within 1 grey level, max diff {a['max_diff']}"
        )
    print(f"load average {load_before[0]:.2f} -> {report['load_after'][0]:.2f}")
    write_result("refine", report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--n-naive", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--batch",
        type=int,
        default=32,
        help="project batch; 32-64 measured fastest on the 2-core CPU (docs/performance.md)",
    )
    p.add_argument("--variants", action="store_true")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args(argv)
    run(a.n, a.n_naive, a.repeats, a.threads, a.batch, a.variants, a.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
