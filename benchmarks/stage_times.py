"""The per-stage time table of docs/performance.md: every stage's wall time, CPU time and the
cores it kept busy in the last `dvc repro`, from the records each stage writes at its end
(stages.common.record_stage_time: .simgan/timings/<stage>.json, untracked).

    python -m benchmarks.stage_times [--repo .] [--out benchmarks/results/stage_times.json]

Prints a markdown table in dvc.yaml's order of stage kinds, with the sums, and writes the
records with the machine (CPU kind) to --out. A stage longer than a minute that keeps fewer than
1.5 of the 2 cores busy is marked: the issue 19 rule that no long stage leaves a core idle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import machine
from simgan.io import write_json_atomic

KINDS = ("inputs", "prepare", "pretrain", "adversarial", "refine", "estimator", "evaluate", "report")
LONG_S, BUSY_CORES = 60.0, 1.5


def load(repo: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((repo / ".simgan" / "timings").glob("*.json"))]
    return sorted(
        rows,
        key=lambda r: (
            KINDS.index(r["stage"].split("@")[0]) if r["stage"].split("@")[0] in KINDS else len(KINDS),
            r["stage"],
        ),
    )


def table(rows: list[dict]) -> str:
    lines = ["| stage | wall (s) | CPU (s) | cores busy |", "|---|---:|---:|---:|"]
    for r in rows:
        busy = r["cpu_s"] / max(r["wall_s"], 1e-9)
        flag = " (idle core)" if r["wall_s"] > LONG_S and busy < BUSY_CORES else ""
        lines.append(f"| {r['stage']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {busy:.2f}{flag} |")
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(r["stage"].split("@")[0], []).append(r)
    lines += ["", "| stage kind | stages | wall (s) | CPU (s) | cores busy |", "|---|---:|---:|---:|---:|"]
    for kind, rs in by_kind.items():
        wall, cpu = sum(r["wall_s"] for r in rs), sum(r["cpu_s"] for r in rs)
        lines.append(f"| {kind} | {len(rs)} | {wall:.0f} | {cpu:.0f} | {cpu / max(wall, 1e-9):.2f} |")
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    lines.append(f"| **all** | {len(rows)} | {wall:.0f} | {cpu:.0f} | {cpu / max(wall, 1e-9):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=None, help="also write the records and the machine as JSON")
    a = ap.parse_args(argv)
    rows = load(a.repo)
    if not rows:
        print(f"{a.repo / '.simgan' / 'timings'}: no stage timings; run `dvc repro` first")
        return 1
    print(table(rows))
    if a.out:
        write_json_atomic(a.out, {"machine": machine(), "stages": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
