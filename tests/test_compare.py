"""`simgan compare` against a real git + DVC repository (no mocks): known metric and param changes
between commits must come out as exact diffs with the right direction marks and gate exit codes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import full_gaze, full_hand, ms

from simgan import compare as cmp
from simgan.cli import main

ROOT = Path(__file__).resolve().parents[1]

ENV = dict(
    os.environ,
    DVC_NO_ANALYTICS="1",
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
)


def run(repo: Path, *cmd: str) -> str:
    return subprocess.run(list(cmd), cwd=repo, env=ENV, check=True, capture_output=True, text=True).stdout


def dvc(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def v1() -> tuple[dict, dict]:
    g, h = full_gaze(), full_hand()
    g["rows"]["refined_4x"]["mean_error_deg"] = ms(8.0, 0.5)
    g["rows"]["refined_1x"]["mean_error_deg"] = ms(10.0, 0.8)
    g["rows"]["refined_1x"]["within7_pct"] = ms(50.0, 2.0)
    g["realism"] = {"refined_vs_real_acc_pct": 60.0, "synthetic_vs_real_acc_pct": 90.0}
    g["label_preservation"]["pupil_shift_px"] = ms(1.0, 0.7)
    h["rows"]["refined_3x"]["pck5_pct"] = ms(70.0, 1.0)
    return g, h


def v2() -> tuple[dict, dict]:
    g, h = v1()
    g["rows"]["refined_4x"]["mean_error_deg"] = ms(9.0, 0.7)  # worse by 1.0 = 12.5%; std neutral
    g["rows"]["refined_1x"]["mean_error_deg"] = ms(9.5, 0.8)  # better by 0.5 = 5%
    g["rows"]["refined_1x"]["within7_pct"] = ms(55.0, 2.0)  # better: higher
    g["realism"] = {"refined_vs_real_acc_pct": 45.0, "synthetic_vs_real_acc_pct": 95.0}  # 10->5 better; 40->45 worse
    g["label_preservation"]["pupil_shift_px"] = ms(1.5, 0.7)  # worse: a shift
    h["rows"]["refined_3x"]["pck5_pct"] = ms(72.0, 1.0)  # better
    return g, h


def write_plots(repo: Path, scale: float) -> None:
    (repo / "plots/gaze").mkdir(parents=True, exist_ok=True)
    rows = ["threshold_deg,synthetic_1x,refined_1x"] + [
        f"{t},{min(100, t * 10 * scale)},{min(100, t * 12 * scale)}" for t in range(0, 11)
    ]
    (repo / "plots/gaze/error_cdf.csv").write_text("\n".join(rows) + "\n")
    losses = ["step,loss_refiner_adv,loss_refiner_reg,loss_disc,disc_acc_real,disc_acc_refined"]
    losses += [f"{s},{1 / (s + 1)},{0.1 * scale},{0.7},{0.5},{0.6}" for s in range(20)]
    (repo / "plots/gaze/train_losses.csv").write_text("\n".join(losses) + "\n")


def commit_all(repo: Path, msg: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", msg)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """c0: DVC set up, no metrics; c1: metrics v1 + plots; c2: metrics v2, lambda 0.5 -> 1.0;
    experiment `exp-tiny`: HEAD with a changed profile and one worse metric."""
    r = tmp_path_factory.mktemp("proj")
    run(r, "git", "init", "-q", "-b", "main")
    dvc(r, "init", "-q")
    (r / "dvc.yaml").write_text("metrics:\n  - metrics/gaze.json\n  - metrics/hand.json\nparams:\n  - params.yaml\n")
    (r / "params.yaml").write_text("train:\n  lambda: 0.5\n  steps: 100\n")
    commit_all(r, "c0")
    g, h = v1()
    write_json(r / "metrics/gaze.json", g)
    write_json(r / "metrics/hand.json", h)
    write_plots(r, 1.0)
    commit_all(r, "c1")
    g, h = v2()
    write_json(r / "metrics/gaze.json", g)
    write_json(r / "metrics/hand.json", h)
    (r / "params.yaml").write_text("train:\n  lambda: 1.0\n  steps: 100\n")
    write_plots(r, 1.5)
    commit_all(r, "c2")
    g["profile"] = "tiny"
    g["rows"]["refined_1x"]["mean_error_deg"] = ms(11.0, 0.8)
    write_json(r / "metrics/gaze.json", g)
    dvc(r, "exp", "save", "-q", "-n", "exp-tiny")
    run(r, "git", "checkout", "--", ".")
    return r


def table_line(md: str, key: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| `{key}` |"))


# --- rules, without a repository ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key, expected",
    [
        ("rows.refined_4x.mean_error_deg.mean", "lower"),
        ("rows.refined_4x.mean_error_deg.std", None),
        ("label_preservation.pupil_shift_px.mean", "lower"),
        ("rows.refined_1x.within7_pct.mean", "higher"),
        ("rows.refined_3x.pck5_pct.mean", "higher"),
        ("gain.refined_vs_synthetic_1x_rel_pct", "higher"),
        ("realism.refined_vs_real_acc_pct", "fifty"),
        ("other.refined_vs_real_acc_pct", "higher"),
        ("seeds", None),
        ("profile", None),
        ("paired.refined_vs_synthetic_1x.mean", "higher"),  # the mean paired improvement
        ("paired.refined_vs_synthetic_1x.se", None),
        ("paired.refined_vs_synthetic_1x.verdict", None),
        ("paired.refined_aug_vs_synthetic_aug_1x.agree", None),
        ("realism.replicates.refined_vs_real_acc_pct.std", None),
        ("realism.oracle.refined_fraction.mean", "higher"),  # the share of the way to real
        ("realism.oracle.refined_between", "higher"),
        ("realism.oracle.synthetic.mean", None),  # the oracle's own score, not the refiner's
        ("realism.kid.refined.mean", "lower"),
        ("realism.kid.real_floor.mean", None),
    ],
)
def test_direction_rules(key, expected):
    assert cmp.direction(key) == expected


def test_marks():
    assert cmp.mark("realism.refined_vs_real_acc_pct", 60.0, 45.0) == "✅"  # 10 from chance -> 5
    assert cmp.mark("realism.refined_vs_real_acc_pct", 45.0, 60.0) == "❌"
    assert cmp.mark("rows.x.mean_error_deg.mean", 8.0, 9.0) == "❌"
    assert cmp.mark("rows.x.pck5_pct.mean", 8.0, 9.0) == "✅"
    assert cmp.mark("rows.x.pck5_pct.std", 8.0, 9.0) == "·"
    assert cmp.mark("rows.x.pck5_pct.mean", 8.0, 8.0) == "·"
    assert cmp.mark("profile", "a", "b") == "·"


def test_parse_gate():
    g = cmp.parse_gate("rows.refined_4x.mean_error_deg.mean:5")
    assert (g.file, g.key, g.threshold, g.absolute) == (None, "rows.refined_4x.mean_error_deg.mean", 5.0, False)
    g = cmp.parse_gate("metrics/gaze.json:rows.refined_4x.mean_error_deg.mean:abs=0.5")
    assert (g.file, g.key, g.threshold, g.absolute) == (
        "metrics/gaze.json",
        "rows.refined_4x.mean_error_deg.mean",
        0.5,
        True,
    )
    assert cmp.parse_gate("a.error:2.5%").threshold == 2.5
    for bad in (
        "rows.x.error",
        "rows.x.error:",
        ":5",
        "rows.x.error:-1",
        "rows.x.error:abs=",
        "x.error:five",
        "rows.x.error.std:5",
        "seeds:5",
    ):
        with pytest.raises(cmp.SimganError, match="--fail-on"):
            cmp.parse_gate(bad)


def test_gate_thresholds_on_a_diff():
    diff = {
        "m.json": {
            "e.error": {"old": 8.0, "new": 9.0},
            "p.pct": {"old": 0.0, "new": -1.0},
            "gone.error": {"old": 1.0, "new": None},
            "new.error": {"old": None, "new": 5.0},
        }
    }

    def failed(spec):
        return [f for _, _, f in cmp.check_gates([cmp.parse_gate(spec)], diff)]

    assert failed("e.error:12") == [True]  # 12.5% > 12
    assert failed("e.error:12.5") == [False]  # not more than the threshold
    assert failed("e.error:abs=0.9") == [True]
    assert failed("e.error:abs=1") == [False]
    assert failed("p.pct:1000") == [True]  # worse from 0: infinitely worse relative
    assert failed("gone.error:50") == [True]  # a metric that vanished fails its gate
    assert failed("new.error:0") == [False]
    with pytest.raises(cmp.SimganError, match="not in any metrics file"):
        cmp.check_gates([cmp.parse_gate("nope.error:5")], diff)


def test_per_replicate_lists_stay_out_of_the_changes_table_and_verdicts_show():
    diff = {
        "metrics/gaze.json": {
            "rows.refined_1x.mean_error_deg.mean": {"old": 10.0, "new": 9.5},
            "rows.refined_1x.mean_error_deg.values": {"old": [10.0, 10.5, 9.5], "new": [9.5, 9.0, 10.0]},
            "realism.replicates.refined_vs_real_acc_pct.values": {"old": [60.0, 61.0], "new": [55.0, 56.0]},
            "paired.refined_vs_synthetic_1x.mean": {"old": 2.0, "new": 2.5},
            "paired.refined_vs_synthetic_1x.verdict": {"old": "no difference", "new": "beats"},
            "replicate_seeds": {"old": [0, 1, 2], "new": [0, 1, 2]},
        }
    }
    md = cmp.changes_table_md(diff, show_all=True)
    assert ".values" not in md
    assert table_line(md, "paired.refined_vs_synthetic_1x.mean").endswith("| 2.0 | 2.5 | +0.5 | +25.0% | ✅ |")
    assert table_line(md, "paired.refined_vs_synthetic_1x.verdict").endswith("| no difference | beats | — | — | · |")
    assert table_line(md, "replicate_seeds").endswith("| [0, 1, 2] | [0, 1, 2] | — | — | · |")
    assert cmp.parse_gate("paired.refined_vs_synthetic_1x.mean:abs=1").key == "paired.refined_vs_synthetic_1x.mean"
    warning = cmp._comparability_warning({"gaze": {"seeds": 3}}, {"gaze": {"seeds": 3, "replicate_seeds": [0, 1, 2]}})
    assert "gaze `replicate_seeds` differs (— → [0, 1, 2])" in warning


# --- against the repository --------------------------------------------------------------------


def test_changed_metrics_exact_diff_marks_and_failing_gate(repo, capsys):
    gate = "rows.refined_4x.mean_error_deg.mean:10"  # 12.5% worse: fails
    assert main(["compare", "HEAD~1", "HEAD", "--repo", str(repo), "--fail-on", gate]) == 1
    out = capsys.readouterr()
    md = out.out
    assert "gate failed" in out.err
    assert (
        "- ❌ `rows.refined_4x.mean_error_deg.mean` (metrics/gaze.json): 8.0 → 9.0, worse by 1.0 "
        "(12.5% of |old|): fails (limit 10.0%)" in md
    )
    assert (
        table_line(md, "rows.refined_4x.mean_error_deg.mean")
        == "| `rows.refined_4x.mean_error_deg.mean` | metrics/gaze.json | 8.0 | 9.0 | +1.0 | +12.5% | ❌ |"
    )
    assert (
        table_line(md, "rows.refined_1x.mean_error_deg.mean")
        == "| `rows.refined_1x.mean_error_deg.mean` | metrics/gaze.json | 10.0 | 9.5 | -0.5 | -5.0% | ✅ |"
    )
    assert (
        table_line(md, "rows.refined_1x.within7_pct.mean")
        == "| `rows.refined_1x.within7_pct.mean` | metrics/gaze.json | 50.0 | 55.0 | +5.0 | +10.0% | ✅ |"
    )
    assert table_line(md, "rows.refined_4x.mean_error_deg.std").endswith("| 0.5 | 0.7 | +0.2 | +40.0% | · |")
    assert table_line(md, "realism.refined_vs_real_acc_pct").endswith("| 60.0 | 45.0 | -15.0 | -25.0% | ✅ |")
    assert table_line(md, "realism.synthetic_vs_real_acc_pct").endswith("| 90.0 | 95.0 | +5.0 | +5.6% | ❌ |")
    assert table_line(md, "label_preservation.pupil_shift_px.mean").endswith("| 1.0 | 1.5 | +0.5 | +50.0% | ❌ |")
    assert (
        table_line(md, "rows.refined_3x.pck5_pct.mean")
        == "| `rows.refined_3x.pck5_pct.mean` | metrics/hand.json | 70.0 | 72.0 | +2.0 | +2.9% | ✅ |"
    )
    assert "`seeds`" not in md.split("## Params")[0]  # unchanged metrics only with --all
    assert table_line(md, "train.lambda") == "| `train.lambda` | params.yaml | 0.5 | 1.0 |"
    assert "`train.steps`" not in md
    # Both revisions' results tables, in the paper's layout.
    at_a, at_b = md.split("## Results at HEAD~1")[1].split("## Results at HEAD (")
    assert "| Refined | 4x | 8.0 ± 0.5 |" in at_a and "| Refined | 4x | 9.0 ± 0.7 |" in at_b
    assert "#### Hand pose estimation" in at_b


def test_all_lists_unchanged_and_passing_gates(repo, capsys):
    gates = [
        "rows.refined_4x.mean_error_deg.mean:15",  # 12.5% worse: within
        "rows.refined_4x.mean_error_deg.mean:abs=1",  # exactly 1.0 worse: not more than
        "metrics/gaze.json:rows.refined_1x.mean_error_deg.mean:0",  # improved
        "realism.refined_vs_real_acc_pct:0",
    ]  # closer to 50 in gaze, unchanged in hand: 2 checks
    argv = ["compare", "HEAD~1", "HEAD", "--repo", str(repo), "--all"]
    assert main(argv + [a for g in gates for a in ("--fail-on", g)]) == 0
    out = capsys.readouterr()
    md = out.out
    assert "gate failed" not in out.err
    assert md.count("passes (limit") == 5 and "fails" not in md.split("## Metrics")[0]
    assert table_line(md, "seeds") == "| `seeds` | metrics/gaze.json | 3 | 3 | 0 | +0.0% | · |"
    assert table_line(md, "train.steps") == "| `train.steps` | params.yaml | 100 | 100 |"


def test_usage_errors_exit_2_with_one_line(repo, capsys):
    assert main(["compare", "HEAD~1", "HEAD", "--repo", str(repo), "--fail-on", "rows.nope.mean_error_deg.mean:5"]) == 2
    assert main(["compare", "HEAD~1", "HEAD", "--repo", str(repo), "--fail-on", "seeds:5"]) == 2
    assert main(["compare", "no-such-rev", "HEAD", "--repo", str(repo)]) == 2
    assert main(["compare", "workspace", "HEAD", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("simgan compare: error: ") for line in err)
    assert "'rows.nope.mean_error_deg.mean' is not in any metrics file" in err[0]
    assert "has no better direction" in err[1]
    assert "'no-such-rev': not a commit, branch, tag or DVC experiment" in err[2]


def test_no_metrics_at_a_revision(repo, capsys):
    assert main(["compare", "HEAD~2", "HEAD~1", "--repo", str(repo)]) == 0
    md = capsys.readouterr().out
    label = "HEAD~2 (" + run(repo, "git", "rev-parse", "--short=7", "HEAD~2").strip() + ")"
    assert f"_No metrics at {label}._" in md
    assert table_line(md, "rows.refined_4x.mean_error_deg.mean").endswith("| — | 8.0 | — | — | · |")


def test_experiment_by_name_and_not_like_for_like(repo, capsys):
    assert main(["compare", "HEAD", "exp-tiny", "--repo", str(repo)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# simgan compare: HEAD (")
    assert "→ exp-tiny (" in md.splitlines()[0]
    assert table_line(md, "rows.refined_1x.mean_error_deg.mean").endswith("| 9.5 | 11.0 | +1.5 | +15.8% | ❌ |")
    assert "**Not like for like:** gaze `profile` differs (default → tiny)" in md
    assert "## Results at exp-tiny" in md


def test_workspace_default_md_and_plots(repo, tmp_path, capsys):
    g, h = v2()
    g["rows"]["refined_4x"]["mean_error_deg"] = ms(7.0, 0.7)
    target = repo / "metrics/gaze.json"
    saved = target.read_text()
    write_json(target, g)
    try:
        md_file, plot_dir = tmp_path / "out/report.md", tmp_path / "out/plots"
        assert main(["compare", "--repo", str(repo), "--md", str(md_file), "--plots", str(plot_dir)]) == 0
    finally:
        target.write_text(saved)
    md = capsys.readouterr().out
    assert md_file.read_text() == md
    assert md.splitlines()[0].endswith("→ workspace")
    assert table_line(md, "rows.refined_4x.mean_error_deg.mean").endswith("| 8.0 | 7.0 | -1.0 | -12.5% | ✅ |")
    pngs = sorted(p.name for p in plot_dir.iterdir())
    assert pngs == ["gaze_error_cdf.png", "gaze_train_losses.png"]  # no hand curves at either revision
    assert all((plot_dir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "![gaze_error_cdf](plots/gaze_error_cdf.png)" in md


def test_bad_plot_csv_and_bad_metrics_json_are_named(repo, tmp_path):
    target = repo / "metrics/gaze.json"
    saved = target.read_text()
    target.write_text("{not json")
    try:
        with pytest.raises(cmp.SimganError, match=r"metrics/gaze.json at workspace: not valid JSON"):
            cmp.compare(repo, "HEAD", "workspace")
    finally:
        target.write_text(saved)
    bad = full_gaze()
    bad["rows"]["refined_4x"]["mean_error_deg"] = "8.0"
    ws = cmp.resolve_rev(repo, "workspace")
    with pytest.raises(cmp.SimganError, match=r"metrics at workspace: gaze metrics: rows\.refined_4x\.mean_error_deg"):
        cmp.build_report(cmp.resolve_rev(repo, "HEAD"), ws, {}, {}, {}, {"gaze": bad}, False, [], [])
    csv_path = repo / "plots/gaze/error_cdf.csv"
    saved = csv_path.read_text()
    csv_path.write_text("threshold_deg,refined_1x\n1,2.5\n2,abc\n")  # numbers and text: malformed
    try:
        with pytest.raises(
            cmp.SimganError,
            match=r"error_cdf.csv at workspace, line 3, column 'refined_1x': "
            r"expected a number, got 'abc'",
        ):
            cmp.write_plots(repo, cmp.resolve_rev(repo, "HEAD"), cmp.resolve_rev(repo, "workspace"), tmp_path)
    finally:
        csv_path.write_text(saved)


def test_plots_of_the_pipelines_own_training_logs(repo, tmp_path, capsys):
    """The pipeline's training logs (one per replicate, plots/<task>/train_losses/seed<k>.csv; the
    first is drawn) have a text column (`phase`) and empty cells (each phase logs its own losses):
    a label and gaps, not errors. The repo fixture's gaze log is at the path of revisions from
    before the replicates (plots/gaze/train_losses.csv), which is read when seed0.csv is absent."""
    saved = {}
    for task in ("gaze", "hand"):
        path = repo / f"plots/{task}/train_losses/seed0.csv"
        saved[path] = path.read_text() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f"plots/{task}/train_losses/seed0.csv", path)
    try:
        assert main(["compare", "HEAD", "--repo", str(repo), "--plots", str(tmp_path / "plots")]) == 0
        cols = cmp._read_csv(repo, cmp.resolve_rev(repo, "workspace"), "plots/hand/train_losses/seed0.csv")
    finally:
        for path, text in saved.items():
            path.unlink() if text is None else path.write_text(text)
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "gaze_error_cdf.png",
        "gaze_train_losses.png",
        "hand_train_losses.png",
    ]
    header = (ROOT / "plots/hand/train_losses.csv").read_text().splitlines()[0].split(",")
    assert "phase" in header and list(cols) == [c for c in header if c != "phase"]
    assert any(math.isnan(v) for v in cols["loss_disc"]) and not all(math.isnan(v) for v in cols["loss_disc"])


def test_unwritable_md_or_plots_exits_2_naming_it(repo, tmp_path, capsys):
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file")
    for option, target in (("--md", blocker / "x.md"), ("--plots", blocker / "plots")):
        assert main(["compare", "HEAD~1", "HEAD", "--repo", str(repo), option, str(target)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"simgan compare: error: --md {blocker / 'x.md'}: cannot create it: {blocker} is a file, not a directory",
        f"simgan compare: error: --plots {blocker / 'plots'}: cannot create it: {blocker} is a file, not a directory",
    ]
    assert blocker.read_text() == "a regular file"


# --- the CI workflow ---------------------------------------------------------------------------

WORKFLOW = Path(__file__).resolve().parents[1] / ".github/workflows/ci.yml"


def workflow_steps() -> list[dict]:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]["steps"]


def test_workflow_shape():
    steps = workflow_steps()
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 2  # HEAD~1 must exist for compare
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    runs = [s.get("run", "") for s in steps]
    assert runs.index(next(r for r in runs if "bash .ci/run" in r)) < runs.index(
        next(r for r in runs if "simgan compare" in r)
    )
    assert any("--index-url https://download.pytorch.org/whl/cpu" in r for r in runs)


def _compare_step_script() -> str:
    return next(s["run"] for s in workflow_steps() if "simgan compare" in s.get("run", ""))


def _run_step(repo: Path, tmp_path: Path) -> tuple[int, str]:
    """Run the workflow's compare step as GitHub would (bash -e), with a .venv/bin/simgan that runs
    this checkout's simgan."""
    shim = repo / ".venv/bin/simgan"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m simgan.cli "$@"\n')
    shim.chmod(0o755)
    summary = tmp_path / "summary.md"
    env = dict(ENV, GITHUB_STEP_SUMMARY=str(summary), PYTHONPATH=str(Path(cmp.__file__).parents[1]))
    p = subprocess.run(["bash", "-e", "-c", _compare_step_script()], cwd=repo, env=env, capture_output=True, text=True)
    return p.returncode, summary.read_text() if summary.exists() else ""


def test_workflow_compare_step_writes_the_summary(repo, tmp_path):
    exclude = repo / ".git/info/exclude"
    exclude.write_text(exclude.read_text() + "\n/.venv/\n/report.md\n")
    rc, summary = _run_step(repo, tmp_path)
    assert rc == 0
    assert summary.startswith("# simgan compare: HEAD~1 (")
    assert "| `rows.refined_4x.mean_error_deg.mean` | metrics/gaze.json | 8.0 | 9.0 | +1.0 | +12.5% | ❌ |" in summary
    assert (repo / "report.md").read_text() == summary


def test_workflow_compare_step_on_a_first_commit(tmp_path):
    r = tmp_path / "first"
    r.mkdir()
    run(r, "git", "init", "-q")
    run(r, "git", "commit", "-q", "--allow-empty", "-m", "first")
    rc, summary = _run_step(r, tmp_path)
    assert rc == 0 and "no parent commit" in summary
