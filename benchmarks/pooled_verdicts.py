"""The paired verdicts of several whole-pipeline runs pooled: each run's replicates are
independent draws of the whole method (on another CPU kind they are other GANs, bit for bit), so
the runs together are one larger replicate design. A reading of committed metrics, not a speed
benchmark.

    python -m benchmarks.pooled_verdicts metrics/hand.json benchmarks/results/repro_epyc_avx2/hand.json
        [--out benchmarks/results/pooled_verdicts_hand.json]

For every paired comparison the runs share (metrics/<task>.json's `paired`): the per-replicate
improvements of every run together, judged by the report's own rule (simgan.report.PAIRED_RULE),
and, for each run after the first, the difference of its mean from the first run's with the
standard error of that difference (sqrt(se_a^2 + se_b^2)): a difference beyond two of those says
the runs' verdicts disagree by more than their replicates' spread."""

from __future__ import annotations

import argparse
import json
import math

from simgan.io import write_json_atomic
from simgan.report import SE_FACTOR, paired_stats


def _paired(path: str) -> dict:
    try:
        with open(path) as f:
            paired = json.load(f)["paired"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: expected a metrics/<task>.json with a 'paired' section ({e})") from None
    return paired


def pool(paths: list[str]) -> dict:
    runs = [_paired(p) for p in paths]
    shared = [k for k in runs[0] if all(k in r for r in runs[1:])]
    if not shared:
        raise SystemExit(f"{', '.join(paths)}: no paired comparison in common")
    out = {}
    for key in shared:
        values = [v for r in runs for v in r[key]["values"]]
        entry = paired_stats(values, [0.0] * len(values), lower_better=False)
        entry["metric"] = runs[0][key].get("metric")
        entry["runs"] = []
        for path, r in zip(paths, runs):
            run = {
                "path": path,
                "mean": r[key]["mean"],
                "se": r[key]["se"],
                "n": r[key]["n"],
                "verdict": r[key]["verdict"],
            }
            if r is not runs[0]:
                delta = r[key]["mean"] - runs[0][key]["mean"]
                se = math.hypot(r[key]["se"], runs[0][key]["se"])
                run.update(minus_first=delta, minus_first_se=se, disagrees=abs(delta) > SE_FACTOR * se)
            entry["runs"].append(run)
        out[key] = entry
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", nargs="+", help="metrics/<task>.json files of whole-pipeline runs (>= 2)")
    ap.add_argument("--out", default=None, help="write the pooled verdicts here as JSON")
    args = ap.parse_args(argv)
    if len(args.metrics) < 2:
        ap.error("metrics: expected at least two runs' metrics files")
    pooled = pool(args.metrics)
    for key, e in pooled.items():
        runs = "; ".join(
            f"{r['mean']:+.2f} ± {r['se']:.2f}"
            + (
                f" ({r['minus_first']:+.2f} ± {r['minus_first_se']:.2f} from the first"
                + (", disagrees)" if r["disagrees"] else ")")
                if "minus_first" in r
                else ""
            )
            for r in e["runs"]
        )
        print(
            f"{key}: {e['verdict']}, {e['mean']:+.2f} ± {e['se']:.2f} SE ({e['metric']}), "
            f"{e['agree']} of {e['n']} agree | runs: {runs}"
        )
    if args.out:
        write_json_atomic(args.out, {"metrics": args.metrics, "pooled": pooled})


if __name__ == "__main__":
    main()
