"""Throughput of the embedded simulators, and the eye sample sheet docs/samples_eyes.png.

    .venv/bin/python benchmarks/bench_simulators.py [--json PATH] [--n-eyes 10000] [--n-hands 10000]
        [--repeats 3] [--samples docs/samples_eyes.png] [--only eyes hands] [--domain-gap]

For each simulator and worker count it renders `n` images `repeats` times after an excluded warm-up,
and reports the median wall time, images/s, the 2-worker speed-up, and the time for 100k eyes /
20k hands extrapolated from that measured run. The machine's load average is recorded alongside,
since other processes sharing the cores slow every number down.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simgan.io import atomic_path, write_json_atomic

TARGETS = {"eyes": 100_000, "hands": 20_000}


def _renderers():
    from simgan.sim.eyes import render_eyes

    out = {
        "eyes": lambda n, workers: render_eyes(n, seed=0, domain="synthetic", workers=workers),
        "eyes-real": lambda n, workers: render_eyes(n, seed=0, domain="real", workers=workers),
    }
    try:
        from simgan.sim.hands import render_hands
    except ModuleNotFoundError:
        print("hands: simgan.sim.hands not available, skipped", file=sys.stderr)
        return out
    out["hands"] = lambda n, workers: render_hands(n, seed=0, domain="synthetic", size=64, workers=workers)
    return out


def measure(render, n: int, workers: int, repeats: int, warmup_n: int) -> dict:
    render(warmup_n, workers)  # imports, first-touch allocations: not part of the steady state
    walls, cpus = [], []
    for _ in range(repeats):
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        render(n, workers)
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
    wall = statistics.median(walls)
    return {
        "n": n,
        "workers": workers,
        "repeats": repeats,
        "wall_s_median": wall,
        "wall_s_all": walls,
        "images_per_s": n / wall,
        "cpu_s_median": statistics.median(cpus),
        # Images per CPU-second: what a core delivers when not shared; on an idle machine the
        # wall-clock rate approaches workers x this.
        "images_per_cpu_s": n / statistics.median(cpus),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker pools)."""
    self_t, children = os.times(), os.times()
    return self_t.user + self_t.system + children.children_user + children.children_system


def domain_gap(n_train: int = 8000, n_test: int = 2000, steps: int = 1500) -> dict:
    """Does the eye domain gap matter? Train the same small gaze CNN on clean synthetic and on
    labelled surrogate-real eyes, test both on held-out real eyes (mean angular error, degrees),
    next to a constant mean-gaze predictor. Single-threaded, ~4 minutes per model on a busy core."""
    import torch
    from torch import nn

    from simgan.data.format import images_to_tensor
    from simgan.sim.eyes import render_eyes

    torch.manual_seed(0)
    torch.set_num_threads(1)

    def tensors(d):
        return images_to_tensor(d["images"], "gaze"), torch.from_numpy(d["gaze"])

    def angular_error(pred, gaze):
        pred = pred / pred.norm(dim=1, keepdim=True)
        return torch.rad2deg(torch.acos((pred * gaze).sum(1).clamp(-1, 1))).mean().item()

    def make_net():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 6)),
            nn.Flatten(),
            nn.Linear(48 * 24, 128),
            nn.ReLU(),
            nn.Linear(128, 3),
        )

    x_test, g_test = tensors(render_eyes(n_test, 3, "real", workers=1))
    out = {
        "n_train": n_train,
        "n_test": n_test,
        "steps": steps,
        "batch": 64,
        "constant_mean_gaze_deg": angular_error(g_test.mean(0, keepdim=True).expand_as(g_test).clone(), g_test),
    }
    for domain, seed in (("synthetic", 1), ("real", 2)):
        x, g = tensors(render_eyes(n_train, seed, domain, workers=1))
        net, gen = make_net(), torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(steps):
            i = torch.randint(0, n_train, (64,), generator=gen)
            loss = ((net(x[i]) - g[i]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out[f"trained_on_{domain}_test_real_deg"] = angular_error(net(x_test), g_test)
        print(
            f"gaze CNN trained on {domain}: {out[f'trained_on_{domain}_test_real_deg']:.1f} deg on real test "
            f"(constant predictor {out['constant_mean_gaze_deg']:.1f})",
            flush=True,
        )
    return out


def write_samples(path: Path, per_domain: int = 16, columns: int = 8, scale: int = 2) -> int:
    from PIL import Image, ImageDraw

    from simgan.sim.eyes import HEIGHT, WIDTH, render_eyes

    label_w, gap = 70, 2
    rows = []
    for domain in ("synthetic", "real"):
        images = render_eyes(per_domain, seed=0, domain=domain, workers=1)["images"]
        for r in range(0, per_domain, columns):
            rows.append((domain if r == 0 else "", images[r : r + columns]))
    cell_w, cell_h = WIDTH * scale + gap, HEIGHT * scale + gap
    sheet = Image.new("L", (label_w + columns * cell_w, len(rows) * cell_h), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (label, images) in enumerate(rows):
        draw.text((4, i * cell_h + cell_h // 2 - 6), label, fill=0)
        for j, image in enumerate(images):
            tile = Image.fromarray(image).resize((WIDTH * scale, HEIGHT * scale), Image.NEAREST)
            sheet.paste(tile, (label_w + j * cell_w, i * cell_h))
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return path.stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/simulators.json")
    parser.add_argument("--n-eyes", type=int, default=10_000)
    parser.add_argument("--n-hands", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", nargs="*", default=None, help="subset of: eyes eyes-real hands ('none' with --domain-gap: only that)"
    )
    parser.add_argument("--samples", default="docs/samples_eyes.png", help="'' to skip the sample sheet")
    parser.add_argument(
        "--domain-gap", action="store_true", help="also train gaze CNNs to measure the eye domain gap (~8 min)"
    )
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    results = []
    for name, render in _renderers().items():
        if args.only and name not in args.only:
            continue
        n = args.n_hands if name == "hands" else args.n_eyes
        target = TARGETS["hands" if name == "hands" else "eyes"]
        by_workers = {}
        for workers in (1, 2):
            r = measure(render, n, workers, args.repeats, warmup_n=min(n, 2048))
            r.update(simulator=name, extrapolated_target_n=target, extrapolated_target_s=target / r["images_per_s"])
            by_workers[workers] = r
            results.append(r)
            print(
                f"{name:10s} workers={workers} n={n}: median {r['wall_s_median']:.2f} s "
                f"({r['images_per_s']:.0f} img/s, {r['images_per_cpu_s']:.0f} per CPU-s) "
                f"-> {target} in {r['extrapolated_target_s']:.1f} s",
                flush=True,
            )
        by_workers[2]["speedup_vs_1_worker"] = by_workers[2]["images_per_s"] / by_workers[1]["images_per_s"]

    print()
    print(
        f"{'simulator':10s} {'w=1 img/s':>10s} {'w=2 img/s':>10s} {'ratio':>6s} {'target':>8s} {'w=2 time':>9s} "
        f"{'img/cpu-s':>10s}"
    )
    for r in results:
        if r["workers"] == 2:
            one = next(x for x in results if x["simulator"] == r["simulator"] and x["workers"] == 1)
            print(
                f"{r['simulator']:10s} {one['images_per_s']:10.0f} {r['images_per_s']:10.0f} "
                f"{r['speedup_vs_1_worker']:6.2f} {r['extrapolated_target_n']:8d} {r['extrapolated_target_s']:8.1f}s "
                f"{r['images_per_cpu_s']:10.0f}"
            )
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (cores: {os.cpu_count()})")

    report = {
        "results": results,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
    }
    if args.samples:
        size = write_samples(Path(args.samples))
        report["samples"] = {"path": args.samples, "bytes": size}
        print(f"wrote {args.samples} ({size / 1024:.0f} KB)")
    if args.domain_gap:
        report["eye_domain_gap"] = domain_gap()
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
