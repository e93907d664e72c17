"""Results tables in the paper's layout, and plain-language verdicts, from the pipeline's metrics.

Pure functions over the dicts in metrics/gaze.json and metrics/hand.json (see docs/compare.md for
the schema). Every table shows only the rows present, because small profiles skip some variants;
nothing here may fail on absence. A malformed cell (a row metric that is not {"mean", "std"}
numbers) is a SimganError naming the key, since silently printing "—" would hide a pipeline bug.

The paper's numbers are marked (recalled): they come from secondary summaries (REFERENCE.md sec. 3)
and are targets for direction and size of effect, not ground truth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from simgan.io import SimganError

RECALLED = "(recalled)"

# --- the paired rule ----------------------------------------------------------------------------
# Each seed is one whole-pipeline replicate (its own GAN, refined set and estimators), and every
# row is scored over the same seeds, so two rows compare replicate by replicate. The one rule every
# verdict follows (metrics `paired.*.verdict`, reports/results.md, a user task's results.md):
PAIRED_RULE = (
    "per replicate, the improvement of one row over the other on the main metric (positive = the "
    "first row better); it beats the other when the mean improvement is more than two standard "
    "errors above 0 and every replicate improves; worse: the mirror (more than two standard errors "
    "below 0 and every replicate worse); otherwise no difference beyond the spread; with one "
    "replicate: no verdict (needs >= 2 replicates)"
)
BEATS, WORSE, NO_DIFFERENCE, NO_VERDICT = "beats", "worse", "no difference", "no verdict"
SE_FACTOR = 2.0


def paired_stats(a, b, lower_better: bool) -> dict:
    """Row a against row b, replicate by replicate (both lists in the same seed order), by PAIRED_RULE.

    values: a's improvement over b per replicate (b - a when lower is better, a - b when higher);
    mean, std (ddof=1 when n > 1, else 0), se (std / sqrt(n)), n, agree (how many replicates have
    the sign of the mean; 0 when the mean is 0) and verdict (BEATS, WORSE, NO_DIFFERENCE or
    NO_VERDICT). Pure Python: compare and the report read it without numpy."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_stats: expected two equal, non-empty lists of replicates, got {len(a)} and {len(b)}")
    d = [float(y) - float(x) if lower_better else float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = math.fsum(d) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    se = std / math.sqrt(n)
    agree = sum(1 for x in d if (x > 0 and mean > 0) or (x < 0 and mean < 0))
    if n < 2:
        verdict = NO_VERDICT
    elif mean > SE_FACTOR * se and all(x > 0 for x in d):
        verdict = BEATS
    elif mean < -SE_FACTOR * se and all(x < 0 for x in d):
        verdict = WORSE
    else:
        verdict = NO_DIFFERENCE
    return {"values": d, "mean": mean, "std": std, "se": se, "n": n, "agree": agree, "verdict": verdict}


# Paper numbers, keyed like our metrics so tables can look them up by row key.
PAPER: dict = {
    "gaze": {
        # Table 3: mean angular error (deg) on real MPIIGaze. "real_1x" there was trained on real
        # UT Multiview, a different data set from the test set; tables footnote that.
        "mean_error_deg": {"real_1x": 13.9, "knn_synthetic": 9.9, "synthetic_1x": 11.2, "refined_1x": 7.8},
        # Table 2: % of test images within 7 deg.
        "within7_pct": {"synthetic_1x": 62.3, "synthetic_4x": 64.9, "refined_1x": 69.4, "refined_4x": 87.2},
        # Ablation: refined without the history buffer.
        "no_history_buffer_mean_error_deg": 12.2,
    },
    "hand": {
        # Table 4: % of joints within 5 px on real NYU.
        "pck5_pct": {
            "synthetic_1x": 69.7,
            "refined_1x": 72.4,
            "real_1x": 74.5,
            "synthetic_3x": 77.7,
            "refined_3x": 83.3,
        },
    },
    # Pupil-centre shift between synthetic and refined eyes, px (eye 55 px wide).
    "label_preservation": {"pupil_shift_px": {"mean": 1.1, "std": 0.8}},
    # Visual Turing test: % of the time people told the pair apart (50 = chance). Humans, not a
    # classifier as ours is, and reported for gaze only.
    "realism": {"refined_vs_real_acc_pct": 51.7, "synthetic_vs_real_acc_pct": 81.0},
}

DASH = "—"
REAL_UT_MARK = "‡"


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x, digits: int) -> str:
    return f"{x:.{digits}f}"


def format_mean_std(d, digits: int = 1) -> str:
    """{"mean": 7.8, "std": 0.4} -> "7.8 ± 0.4"; a bare number or a missing std gives just the mean;
    None gives "—"."""
    if d is None:
        return DASH
    if _is_num(d):
        return _fmt(d, digits)
    if not isinstance(d, Mapping) or not _is_num(d.get("mean")):
        raise SimganError(f"expected {{'mean': number, 'std': number}}, got {d!r}")
    std = d.get("std")
    if std is None:
        return _fmt(d["mean"], digits)
    if not _is_num(std):
        raise SimganError(f"expected a number for 'std', got {std!r}")
    return f"{_fmt(d['mean'], digits)} ± {_fmt(std, digits)}"


def _cell(metrics: Mapping, task: str, row: str, metric: str) -> Mapping | None:
    """The {"mean", "std"} dict at rows.ROW.METRIC, None when absent; raises naming the key when it
    is there but malformed."""
    entry = (metrics.get("rows") or {}).get(row)
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise SimganError(f"{task} metrics: rows.{row}: expected an object of metrics, got {entry!r}")
    d = entry.get(metric)
    if d is None:
        return None
    if not isinstance(d, Mapping) or not _is_num(d.get("mean")) or not (d.get("std") is None or _is_num(d.get("std"))):
        raise SimganError(f"{task} metrics: rows.{row}.{metric}: expected {{'mean': number, 'std': number}}, got {d!r}")
    return d


@dataclass(frozen=True)
class _Column:
    metric: str
    header: str
    paper: Mapping[str, float] | None = None  # row key -> paper number; None: no paper column


@dataclass(frozen=True)
class _TaskSpec:
    name: str
    title: str
    rows: tuple[tuple[str, str, str], ...]  # (row key, label, size) in the paper's order
    columns: tuple[_Column, ...]
    primary: str  # the metric verdicts judge by
    lower_is_better: bool
    unit: str
    scale: str  # the largest data multiple in the paper for this task


_SOURCES = (("synthetic", "Synthetic"), ("refined", "Refined"), ("real", "Real"))
_BASELINES = {
    "constant": ("Baseline: constant predictor", DASH),
    "knn_synthetic": ("Baseline: k-NN on synthetic", "1x"),
    "synthetic_aug_1x": ("Baseline: synthetic + augmentation", "1x"),
    "refined_aug_1x": ("Baseline control: refined + augmentation", "1x"),
}


def _main_rows(sizes: tuple[int, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{src}_{n}x", label, f"{n}x") for src, label in _SOURCES for n in sizes)


def _baseline_rows(keys: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((k, *_BASELINES[k]) for k in keys)


GAZE = _TaskSpec(
    name="gaze",
    title="Gaze estimation (mean ± std over seeds)",
    rows=_main_rows((1, 4)) + _baseline_rows(("constant", "knn_synthetic", "synthetic_aug_1x", "refined_aug_1x")),
    columns=(
        _Column("mean_error_deg", "Mean error (deg)", PAPER["gaze"]["mean_error_deg"]),
        _Column("median_error_deg", "Median error (deg)"),
        _Column("within7_pct", "Within 7 deg (%)", PAPER["gaze"]["within7_pct"]),
    ),
    primary="mean_error_deg",
    lower_is_better=True,
    unit="deg",
    scale="4x",
)

HAND = _TaskSpec(
    name="hand",
    title="Hand pose estimation (mean ± std over seeds)",
    rows=_main_rows((1, 2, 3)) + _baseline_rows(("synthetic_aug_1x", "refined_aug_1x", "constant")),
    columns=(_Column("pck5_pct", "Joints within 5 px (%)", PAPER["hand"]["pck5_pct"]),),
    primary="pck5_pct",
    lower_is_better=False,
    unit="points",
    scale="3x",
)

SPECS = {"gaze": GAZE, "hand": HAND}

_SIZED = re.compile(r"^(?P<src>.+)_(?P<n>\d+)x$")


def _present_rows(metrics: Mapping, spec: _TaskSpec) -> list[tuple[str, str, str]]:
    """Known rows in the paper's order, then any rows the pipeline added that this module does not
    know yet (shown under their own key rather than dropped)."""
    rows = metrics.get("rows") or {}
    if not isinstance(rows, Mapping):
        raise SimganError(f"{spec.name} metrics: rows: expected an object keyed by row, got {rows!r}")
    known = [r for r in spec.rows if r[0] in rows]
    known_keys = {r[0] for r in spec.rows}
    extra = []
    for key in sorted(k for k in rows if k not in known_keys):
        m = _SIZED.match(key)
        extra.append((key, f"`{key}`", f"{m['n']}x" if m else DASH))
    return known + extra


def md_table(header: list[str], body: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _paper_cell(spec: _TaskSpec, col: _Column, row: str) -> str:
    value = (col.paper or {}).get(row)
    if value is None:
        return ""
    mark = f" {REAL_UT_MARK}" if spec.name == "gaze" and row == "real_1x" and col.metric == "mean_error_deg" else ""
    return f"{value}{mark}"


def _header_line(metrics: Mapping) -> str:
    seeds = metrics.get("seeds")
    profile = metrics.get("profile")
    replicates = metrics.get("replicate_seeds")
    bits = []
    if isinstance(replicates, list) and replicates:
        n = len(replicates)
        bits.append(
            f"{n} whole-pipeline replicate{'s' if n != 1 else ''} (seeds {', '.join(map(str, replicates))}; each "
            "its own GAN, refined set and estimator, so ± is the spread over replicates, not over estimator "
            "seeds only)"
        )
    elif seeds is not None:
        bits.append(f"{seeds} seed{'s' if seeds != 1 else ''}")
    if profile is not None:
        bits.append(f"profile `{profile}`")
    return ("Over " + ", ".join(bits) + ". ") if bits else ""


def _task_table_md(metrics: Mapping, spec: _TaskSpec) -> str:
    rows = _present_rows(metrics, spec)
    if not rows:
        return f"_No {spec.name} rows in these metrics._"
    header = ["Training data", "Size"]
    for col in spec.columns:
        header.append(col.header)
        if col.paper is not None:
            header.append(f"Paper {RECALLED}")
    body = []
    for key, label, size in rows:
        line = [label, size]
        for col in spec.columns:
            line.append(format_mean_std(_cell(metrics, spec.name, key, col.metric)))
            if col.paper is not None:
                line.append(_paper_cell(spec, col, key))
        body.append(line)
    notes = [
        _header_line(metrics) + "Paper numbers are " + RECALLED + " from secondary summaries: "
        "targets for direction and size of effect, not ground truth."
    ]
    if spec.name == "gaze":
        if any(r[0] == "real_1x" for r in rows):
            notes.append(
                f"{REAL_UT_MARK} The paper's real-data CNN was trained on UT Multiview, a different "
                "data set from its test set; ours is trained on the real domain it is tested on."
            )
        notes.append(
            f"Paper ablation {RECALLED}: without the history buffer the refined mean error rose to "
            f"{PAPER['gaze']['no_history_buffer_mean_error_deg']} deg (from 7.8)."
        )
    return md_table(header, body) + "\n\n" + "\n\n".join(notes)


def gaze_table_md(metrics: Mapping) -> str:
    """Gaze results in the layout of the paper's Tables 2 and 3: one row per (training data, size),
    then baselines, with our mean/median error and % within 7 deg beside the paper's numbers."""
    return _task_table_md(metrics, GAZE) + _gain_md(metrics)


def hand_table_md(metrics: Mapping) -> str:
    """Hand results in the layout of the paper's Table 4: (training data, size in 1x/2x/3x) rows
    with our % of joints within 5 px beside the paper's."""
    return _task_table_md(metrics, HAND)


def _gain_md(metrics: Mapping) -> str:
    gain = metrics.get("gain")
    if not isinstance(gain, Mapping) or not gain:
        return ""
    paper_1x = PAPER["gaze"]["mean_error_deg"]
    derived = {
        "refined_vs_synthetic_1x_rel_pct": 100
        * (paper_1x["synthetic_1x"] - paper_1x["refined_1x"])
        / paper_1x["synthetic_1x"]
    }
    body = []
    for key in sorted(gain):
        value = gain[key]
        ours = _fmt(value, 1) if _is_num(value) else format_mean_std(value)
        paper = f"{derived[key]:.1f} (from Table 3)" if key in derived else ""
        body.append([f"`{key}`", ours, paper])
    return "\n\nRelative gain of refined over synthetic training (mean error, %):\n\n" + md_table(
        ["Gain", "Ours (%)", f"Paper {RECALLED}"], body
    )


def _replicate_std(section: Mapping, key: str) -> float | None:
    """section.replicates.<key>.std (realism, label_preservation), None when absent (metrics
    from before whole-pipeline replicates)."""
    reps = section.get("replicates")
    entry = reps.get(key) if isinstance(reps, Mapping) else None
    std = entry.get("std") if isinstance(entry, Mapping) else None
    return std if _is_num(std) else None


def _replicates_in(metrics_by_task: Mapping[str, Mapping], section: str) -> int:
    """How many replicates the section's per-replicate values hold (the most over the tasks), 0 if none."""
    n = 0
    for metrics in metrics_by_task.values():
        reps = ((metrics or {}).get(section) or {}).get("replicates")
        if isinstance(reps, Mapping):
            n = max([n] + [len(e.get("values") or []) for e in reps.values() if isinstance(e, Mapping)])
    return n


# Raw synthetic images differ from real ones by construction; a classifier that cannot tell those
# apart either (within this many points of chance) has not learned, and its 50% means nothing.
UNTRAINED_REALISM_POINTS = 5.0


def realism_table_md(metrics_by_task: Mapping[str, Mapping]) -> str:
    """Automated Turing test: a held-out classifier's accuracy at telling each pair apart (50% =
    indistinguishable), beside the paper's human visual Turing test (gaze only)."""
    labels = {
        "refined_vs_real_acc_pct": "refined vs real",
        "synthetic_vs_real_acc_pct": "synthetic vs real",
        "refined_vs_real_pose_matched_acc_pct": "refined vs real, pose-matched",
        "synthetic_vs_real_pose_matched_acc_pct": "synthetic vs real, pose-matched",
    }
    body, notes = [], []
    for task, metrics in metrics_by_task.items():
        realism = (metrics or {}).get("realism") or {}
        for key, label in labels.items():
            value = realism.get(key)
            if value is None:
                continue
            if not _is_num(value):
                raise SimganError(f"{task} metrics: realism.{key}: expected a number, got {value!r}")
            paper = PAPER["realism"].get(key) if task == "gaze" else None
            std = _replicate_std(realism, key)
            body.append(
                [
                    task,
                    label,
                    _fmt(value, 1) + (f" ± {_fmt(std, 1)}" if std is not None else ""),
                    _fmt(abs(value - 50.0), 1),
                    f"{paper} (humans)" if paper is not None else "",
                ]
            )
            if key == "synthetic_vs_real_acc_pct" and abs(value - 50.0) < UNTRAINED_REALISM_POINTS:
                notes.append(
                    f"**The {task} classifier learned nothing:** it tells raw synthetic images from "
                    f"real ones only {value:.1f}% of the time, so its refined-vs-real number is no "
                    f"evidence of realism (raise `evaluate.{task}.realism_steps`)."
                )
    if not body:
        return "_No realism metrics._"
    n = _replicates_in(metrics_by_task, "realism")
    over = f" Accuracy: mean ± std over {n} whole-pipeline replicates." if n else ""
    rechecks = {
        (int(r.get("restarts", 1)), r.get("recheck_below_pct"))
        for r in ((m or {}).get("realism") or {} for m in metrics_by_task.values())
        if int(r.get("restarts", 1)) > 1
    }
    for restarts, below in sorted(rechecks, key=str):
        bar = f"under {_fmt(below, 0)}% " if below is not None else ""
        over += (
            f" An accuracy {bar}was rechecked by up to {restarts - 1} more classifiers from other seeds, "
            "the best counting: one that fails to train would read as realism."
        )
    return (
        md_table(
            ["Task", "Pair", "Classifier accuracy (%)", "Distance from chance (points)", f"Paper {RECALLED}"], body
        )
        + "\n\n50% means the classifier cannot tell the pair apart; the paper's numbers are people's "
        "accuracy in a visual Turing test, so only the direction is comparable. Pose-matched: the "
        "synthetic rows whose labels are nearest the real images' (refined: the same rows), so the "
        "simulator's pose distribution, which a label-keeping refiner cannot change, gives nothing away."
        + over
        + "".join(f"\n\n{n}" for n in notes)
    )


# The realism issue's bar for the oracle: refined at least halfway from synthetic to real.
ORACLE_HALFWAY = 0.5


def _oracle_row(task: str, o: Mapping) -> list[str]:
    metric = o.get("metric", "")
    digits = 1 if metric.endswith("pct") or metric.endswith("deg") else 3
    frac = o.get("refined_fraction") or {}
    return [
        task,
        f"`{o.get('estimator', 'real')}` on `{metric}`",
        format_mean_std(o.get("synthetic"), digits),
        format_mean_std(o.get("refined"), digits),
        format_mean_std(o.get("real"), digits),
        format_mean_std(frac, 2) if frac else DASH,
        f"{o.get('refined_between', 0)} of {o.get('replicates', 0)}",
    ]


def _kid_cell(d) -> str:
    """KID's mean ± std (over replicates) to 3 significant digits: its scale follows the feature
    extractor's (gaze's FC features give values around 0.3, hand's pooled maps around 30)."""
    if not isinstance(d, Mapping) or not _is_num(d.get("mean")):
        return DASH
    std = d.get("std")
    return f"{d['mean']:.3g}" + (f" ± {std:.2g}" if _is_num(std) else "")


def realism_scores_md(metrics_by_task: Mapping[str, Mapping]) -> str:
    """The field's realism scores beside the classifier: the oracle score (estimators trained on
    real images only, scored on each image set against the labels it carries: refined must land
    between synthetic and real, and the table checks that order per replicate) and KID to the real
    test set on those estimators' features, with the real-vs-real floor. Empty when no task has
    them (metrics from before, or a task without a real variant)."""
    oracle_body, kid_body, notes = [], [], []
    for task, metrics in metrics_by_task.items():
        realism = (metrics or {}).get("realism") or {}
        o, k = realism.get("oracle"), realism.get("kid")
        if isinstance(o, Mapping):
            oracle_body.append(_oracle_row(task, o))
            n, between = o.get("replicates", 0), o.get("refined_between", 0)
            frac = (o.get("refined_fraction") or {}).get("mean")
            if n and between < n:
                notes.append(
                    f"**{task}: the order fails** on {n - between} of {n} replicates: the real-trained "
                    f"estimator scores refined images outside the synthetic-real interval."
                )
            if _is_num(frac) and frac < ORACLE_HALFWAY:
                notes.append(
                    f"{task}: refined gets {100 * frac:.0f}% of the way from synthetic to real on the oracle "
                    f"(the realism bar: at least {100 * ORACLE_HALFWAY:.0f}%; short by {100 * (ORACLE_HALFWAY - frac):.0f} points)."
                )
        if isinstance(k, Mapping):
            kid_body.append([task] + [_kid_cell(k.get(key)) for key in ("synthetic", "refined", "real_floor")])
            kid_body[-1].append(f"{k.get('subsets')} x {k.get('subset_size')}")
    if not oracle_body and not kid_body:
        return ""
    out = []
    if oracle_body:
        out.append(
            md_table(
                [
                    "Task",
                    "Oracle (real-trained estimator)",
                    "Synthetic",
                    "Refined",
                    "Real (test set)",
                    "Refined: share of the way to real",
                    "Refined between synthetic and real",
                ],
                oracle_body,
            )
            + "\n\nThe oracle score (pix2pix and CycleGAN's FCN-score): the estimators of the real row, "
            "trained on real images only, applied to synthetic and refined images and scored against "
            "the synthetic labels those images keep; mean ± std over the replicates (replicate k's "
            "estimator on replicate k's refined set)."
        )
    if kid_body:
        out.append(
            md_table(["Task", "KID x 1000: synthetic", "refined", "real vs real (floor)", "draws"], kid_body)
            + "\n\nKID (Binkowski et al. 2018): unbiased squared MMD to the real test set under a cubic "
            "kernel, on the penultimate features of the real-trained estimator; per replicate the mean "
            "over random draws, then mean ± std over the replicates. Lower is more real; the floor "
            "compares two halves of the real test set."
        )
    return "\n\n".join(out + notes)


_SHIFTS = {
    "pupil_shift_px": ("gaze", "pupil centre shift (px)"),
    "joint_depth_shift": ("hand", "joint depth shift"),
}


def label_preservation_md(metrics_by_task: Mapping[str, Mapping]) -> str:
    """How far refinement moved the label-bearing structures (lower is better). With whole-pipeline
    replicates a last column gives the mean ± std of the replicates' means (`Ours` keeps the
    metric's own std, e.g. the pupil shift's over images, as the paper's)."""
    n = _replicates_in(metrics_by_task, "label_preservation")
    body = []
    for task, metrics in metrics_by_task.items():
        lp = (metrics or {}).get("label_preservation") or {}
        for key in sorted(k for k in lp if k != "replicates"):
            try:
                mean = lp[key]["mean"] if isinstance(lp[key], Mapping) else lp[key]
                # a shift below 1 (hand depth, in [-1, 1] units) to 2 decimals: one printed 0.07 as 0.1
                ours = format_mean_std(lp[key], 1 if not _is_num(mean) or abs(mean) >= 1 else 2)
            except SimganError as e:
                raise SimganError(f"{task} metrics: label_preservation.{key}: {e}") from None
            paper = PAPER["label_preservation"].get(key)
            label = _SHIFTS.get(key, (task, f"`{key}`"))[1]
            line = [task, label, ours, format_mean_std(paper) if paper else ""]
            if n:
                mean = lp[key]["mean"] if isinstance(lp[key], Mapping) else lp[key]
                std = _replicate_std(lp, key)
                line.append(format_mean_std({"mean": mean, "std": std}, 2) if std is not None else "")
            body.append(line)
    if not body:
        return "_No label-preservation metrics._"
    header = ["Task", "Shift between synthetic and refined", "Ours", f"Paper {RECALLED}"]
    if n:
        header.append(f"Over {n} replicates (mean ± std)")
    return md_table(header, body)


# --- verdicts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    a: str
    b: str
    # "better", "worse" (a relative to b), "same" (no difference beyond the spread) or "none" (one
    # replicate: no paired verdict)
    kind: str
    diff: float  # a.mean - b.mean
    spread: float  # the larger std (unpaired), or the paired mean's standard error
    a_cell: Mapping
    b_cell: Mapping
    paired: Mapping | None = None  # paired_stats of a against b, when the rows pair per replicate


_KIND_OF_VERDICT = {BEATS: "better", WORSE: "worse", NO_DIFFERENCE: "same", NO_VERDICT: "none"}


def _paired_for(metrics: Mapping, spec: _TaskSpec, a: str, b: str, ca: Mapping, cb: Mapping) -> Mapping | None:
    """The paired comparison of rows a and b: the metrics' own `paired` entry for (a, b) when it has
    one, else paired_stats over the two cells' per-replicate `values` (the same seeds, so the same
    replicates); None for metrics without per-replicate values (before whole-pipeline replicates)."""
    for key, entry in (metrics.get("paired") or {}).items():
        if isinstance(entry, Mapping) and entry.get("a") == a and entry.get("b") == b:
            if entry.get("verdict") not in _KIND_OF_VERDICT or not all(
                _is_num(entry.get(k)) for k in ("mean", "se", "n", "agree")
            ):
                raise SimganError(
                    f"{spec.name} metrics: paired.{key}: expected mean, se, n, agree and a verdict "
                    f"({', '.join(_KIND_OF_VERDICT)}), got {dict(entry)!r}"
                )
            return entry
    va, vb = ca.get("values"), cb.get("values")
    if not isinstance(va, list) or not isinstance(vb, list) or len(va) != len(vb) or not va:
        return None
    if not all(_is_num(x) for x in va + vb):
        raise SimganError(
            f"{spec.name} metrics: rows.{a} / rows.{b}: expected numbers in 'values', got {va!r} / {vb!r}"
        )
    return paired_stats(va, vb, spec.lower_is_better)


def judge(metrics: Mapping, task: str, a: str, b: str) -> Outcome | None:
    """Row a against row b on the task's primary metric; None if either row is absent.

    Rows that pair per replicate (a `paired` entry, or per-replicate `values` in both) follow
    PAIRED_RULE. Older metrics without them follow the rule "a difference not larger than the
    spread (the larger of the two stds) is not a result"."""
    spec = SPECS[task]
    ca, cb = _cell(metrics, task, a, spec.primary), _cell(metrics, task, b, spec.primary)
    if ca is None or cb is None:
        return None
    diff = ca["mean"] - cb["mean"]
    p = _paired_for(metrics, spec, a, b, ca, cb)
    if p is not None:
        return Outcome(a, b, _KIND_OF_VERDICT[p["verdict"]], diff, p["se"], ca, cb, p)
    spread = max(ca.get("std") or 0.0, cb.get("std") or 0.0)
    if abs(diff) <= spread:
        kind = "same"
    elif (diff < 0) == spec.lower_is_better:
        kind = "better"
    else:
        kind = "worse"
    return Outcome(a, b, kind, diff, spread, ca, cb)


def _row_name(key: str) -> str:
    names = {
        "constant": "the constant predictor",
        "knn_synthetic": "k-NN on synthetic",
        "synthetic_aug_1x": "synthetic + augmentation (1x)",
        "refined_aug_1x": "refined + augmentation (1x)",
    }
    if key in names:
        return names[key]
    m = _SIZED.match(key)
    return f"{m['src'].replace('_', ' ')} ({m['n']}x)" if m else key


def _sentence(o: Outcome, spec: _TaskSpec) -> str:
    what = {"mean_error_deg": "mean error", "pck5_pct": "joints within 5 px"}[spec.primary]
    unit = " deg" if spec.unit == "deg" else "%"
    nums = f"{format_mean_std(o.a_cell)}{unit} vs {format_mean_std(o.b_cell)}{unit}"
    a, b = _row_name(o.a), _row_name(o.b)
    if o.paired is not None:
        return _paired_sentence(o, spec, what, nums, a, b)
    if o.kind == "same":
        return (
            f"{a.capitalize()} vs {b}: no measurable difference in {what} ({nums}; the difference "
            f"{abs(o.diff):.1f} is within the spread {o.spread:.1f})."
        )
    rel = f", {100 * abs(o.diff) / abs(o.b_cell['mean']):.0f}% relative" if o.b_cell["mean"] else ""
    if spec.lower_is_better:
        direction = "lower" if o.diff < 0 else "higher"
    else:
        direction = "higher" if o.diff > 0 else "lower"
    size = f"{abs(o.diff):.1f} {spec.unit} {direction}{rel}"
    verb = "beats" if o.kind == "better" else "does not beat"
    return f"{a.capitalize()} {verb} {b} on {what}: {nums} ({size}; spread {o.spread:.1f})."


def _paired_numbers(p: Mapping, spec: _TaskSpec) -> str:
    return (
        f"mean paired improvement {p['mean']:.2f} {spec.unit} ± {p['se']:.2f} (SE), "
        f"{p['agree']} of {p['n']} replicate{'s' if p['n'] != 1 else ''} agree"
    )


def _paired_sentence(o: Outcome, spec: _TaskSpec, what: str, nums: str, a: str, b: str) -> str:
    """The sentence of a paired outcome: both rows' mean ± std, the mean paired improvement of a over
    b ± its standard error, how many replicates agree, and the rule's outcome (PAIRED_RULE)."""
    p = o.paired
    paired_nums = _paired_numbers(p, spec)
    if o.kind == "better":
        return f"{a.capitalize()} beats {b} on {what}: {nums}; {paired_nums} (paired rule: beats)."
    if o.kind == "worse":
        return f"{a.capitalize()} does not beat {b} on {what}: {nums}; {paired_nums} (paired rule: worse)."
    if o.kind == "none":
        return (
            f"{a.capitalize()} vs {b}: no verdict on {what} from one replicate ({nums}; paired improvement "
            f"{p['mean']:.2f} {spec.unit}; the paired rule needs >= 2 replicates)."
        )
    return f"{a.capitalize()} vs {b}: no difference beyond the spread in {what} ({nums}; {paired_nums})."


def _summary_names(outcomes: list[Outcome]) -> list[str]:
    """Comparison rows for the summary sentence. The augmented pair shares its comparison row with
    a plain one, so a row judged alike by both is named once, saying which refined rows it was."""
    by_row: dict[str, set[bool]] = {}
    for o in outcomes:
        by_row.setdefault(_row_name(o.b), set()).add(o.a.startswith("refined_aug"))
    labels = {
        frozenset({False}): "",
        frozenset({True}): " (refined + augmentation)",
        frozenset({False, True}): " (refined with or without augmentation)",
    }
    return sorted(name + labels[frozenset(aug)] for name, aug in by_row.items())


def _verdict_pairs(metrics: Mapping, spec: _TaskSpec) -> list[tuple[str, str]]:
    rows = metrics.get("rows") or {}
    sizes = sorted({int(m["n"]) for k in rows if (m := _SIZED.match(k)) and m["src"] == "refined"})
    pairs = []
    for n in sizes:
        pairs += [(f"refined_{n}x", f"synthetic_{n}x"), (f"refined_{n}x", f"real_{n}x")]
    pairs += [("refined_1x", b) for b in ("constant", "knn_synthetic", "synthetic_aug_1x")]
    pairs.append(("refined_aug_1x", "synthetic_aug_1x"))
    return [(a, b) for a, b in pairs if a in rows and b in rows]


def verdict_md(metrics: Mapping, task: str) -> str:
    """Plain sentences, computed from the numbers: which rows refined training beats and which it
    does not, on the task's primary metric, by PAIRED_RULE where the rows pair per replicate (else
    treating a difference not larger than the spread as no result); then whether more data helps
    each source."""
    if task not in SPECS:
        raise SimganError(f"verdict: unknown task {task!r}; expected one of {sorted(SPECS)}")
    spec = SPECS[task]
    outcomes = [o for a, b in _verdict_pairs(metrics, spec) if (o := judge(metrics, task, a, b))]
    if not outcomes:
        return "_No refined row with a comparison row in these metrics: nothing to judge._"
    lines = [f"- {_sentence(o, spec)}" for o in outcomes]
    groups = {k: _summary_names([o for o in outcomes if o.kind == k]) for k in ("better", "worse", "same", "none")}
    summary = []
    if groups["better"]:
        summary.append("Refined training beats " + ", ".join(groups["better"]) + ".")
    if groups["worse"]:
        summary.append("It does not beat " + ", ".join(groups["worse"]) + ".")
    if groups["same"]:
        summary.append("No measurable difference from " + ", ".join(groups["same"]) + ".")
    if groups["none"]:
        summary.append("No verdict from one replicate against " + ", ".join(groups["none"]) + ".")
    scaling = _scaling_sentence(metrics, spec)
    return " ".join(summary) + "\n\n" + "\n".join(lines) + (f"\n\n{scaling}" if scaling else "")


def _scaling_pairs(metrics: Mapping) -> list[tuple[str, str]]:
    """(largest size, 1x) of each source with rows at 1x and a larger size."""
    rows = metrics.get("rows") or {}
    pairs = []
    for src in ("synthetic", "refined"):
        ns = sorted(int(m["n"]) for k in rows if (m := _SIZED.match(k)) and m["src"] == src)
        if len(ns) >= 2 and ns[0] == 1:
            pairs.append((f"{src}_{ns[-1]}x", f"{src}_1x"))
    return pairs


def paired_table_md(metrics: Mapping, task: str) -> str:
    """Paired differences (per replicate): for each compared pair that pairs per replicate, each
    replicate's improvement of the first row over the second on the primary metric (positive = the
    first better), their mean ± std, the standard error, how many replicates agree with the mean's
    sign, and the verdict by PAIRED_RULE. Empty for metrics without per-replicate values."""
    spec = SPECS[task]
    pairs = _verdict_pairs(metrics, spec) + _scaling_pairs(metrics)
    outcomes = [o for a, b in pairs if (o := judge(metrics, task, a, b)) and o.paired is not None]
    if not outcomes:
        return ""
    body = []
    for o in outcomes:
        p = o.paired
        values = p.get("values")
        per = ", ".join(_fmt(x, 2) for x in values) if isinstance(values, list) else DASH
        body.append(
            [
                f"{_row_name(o.a)} vs {_row_name(o.b)}",
                per,
                format_mean_std({"mean": p["mean"], "std": p.get("std")}, 2),
                _fmt(p["se"], 2),
                f"{p['agree']} of {p['n']}",
                p["verdict"],
            ]
        )
    what = {"mean_error_deg": "mean error", "pck5_pct": "joints within 5 px"}[spec.primary]
    return (
        f"Improvement of the first row over the second in {what} ({spec.unit}), replicate by replicate "
        f"(positive = the first row better). Rule: {PAIRED_RULE}.\n\n"
        + md_table(
            ["Comparison", f"Per replicate ({spec.unit})", "Mean ± std", "SE", "Replicates agreeing", "Verdict"], body
        )
    )


def _scaling_sentence(metrics: Mapping, spec: _TaskSpec) -> str:
    """The paper's headline is that more refined data keeps helping while more synthetic data barely
    does; say what our numbers show for the largest multiple present."""
    parts = []
    for big, one in _scaling_pairs(metrics):
        o = judge(metrics, spec.name, big, one)
        if o is None:
            continue
        src, n = one.rsplit("_", 1)[0], big.rsplit("_", 1)[1]
        if o.paired is not None:
            word = {"better": "improves", "worse": "gets worse", "same": "no difference beyond the spread"}.get(
                o.kind, "no verdict (one replicate)"
            )
            parts.append(f"{src} 1x → {n}: {word} ({_paired_numbers(o.paired, spec)})")
        elif o.kind == "same":
            parts.append(f"{src} 1x → {n}: no measurable difference")
        else:
            word = "improves" if o.kind == "better" else "gets worse"
            parts.append(f"{src} 1x → {n} {word} by {abs(o.diff):.1f} {spec.unit} (spread {o.spread:.1f})")
    if not parts:
        return ""
    return "More training data: " + "; ".join(parts) + "."


FIGURES = (
    ("samples/seed0.png", "synthetic | refined | real samples (replicate 0)"),
    ("curves.png", "error / PCK curves on the real test set"),
    ("size.png", "accuracy vs training-set size"),
    ("losses.png", "adversarial training losses"),
)


def figures_md(figures_by_task: Mapping[str, Collection[str]]) -> str:
    """The report's figure section: per task, the FIGURES among its files (names in
    reports/<task>/), in FIGURES order, as links relative to reports/."""
    lines = ["", "## Figures", ""]
    for task, names in figures_by_task.items():
        lines += [f"![{task}: {caption}]({task}/{name})" for name, caption in FIGURES if name in names]
    return "\n".join(lines) + "\n"


def report_md(metrics_by_task: Mapping[str, Mapping], level: int = 1) -> str:
    """All tables and verdicts for the tasks present, as one markdown document. `level` is the
    heading level of its title, so callers can nest it (compare puts two under its own headings)."""
    h = "#" * level
    present = {t: m for t, m in metrics_by_task.items() if m}
    if not present:
        return f"{h} Results\n\n_No metrics._\n"
    out = [f"{h} Results"]
    for task in ("gaze", "hand"):
        if task not in present:
            continue
        spec = SPECS[task]
        table = gaze_table_md(present[task]) if task == "gaze" else hand_table_md(present[task])
        out += [f"{h}# {spec.title}", table, f"**Verdict ({task}).** " + verdict_md(present[task], task)]
        paired = paired_table_md(present[task], task)
        if paired:
            out += [f"{h}## Paired differences (per replicate, {task})", paired]
    out += [f"{h}# Realism (automated Turing test)", realism_table_md(present)]
    scores = realism_scores_md(present)
    if scores:
        out += [f"{h}# Realism: oracle score and KID", scores]
    out += [f"{h}# Label preservation", label_preservation_md(present)]
    return "\n\n".join(out) + "\n"
