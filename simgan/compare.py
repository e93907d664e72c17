"""`simgan compare [A] [B]`: what changed in metrics and params between two revisions, with
direction marks, optional CI gates, the results tables of both revisions and their curves.

DVC does the diffing (`dvc metrics diff`, `dvc params diff`), so the numbers match what
`dvc metrics diff` prints; the full metrics files and plot CSVs are read at each revision with
`git show` (or from disk for the workspace) because DVC's diff only carries flattened values.
A revision may be anything git resolves or a DVC experiment name (refs/exps/...). See docs/compare.md.

`simgan lock-check`, for CI beside the comparison: whether dvc.lock records a run of the current
dvc.yaml, params and code, telling a stale lock from a checkout that merely lacks the data.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from simgan import report
from simgan.config import flatten
from simgan.io import SimganError, atomic_path, write_text_atomic

WORKSPACE = "workspace"
METRICS_FILES = {"gaze": "metrics/gaze.json", "hand": "metrics/hand.json"}
# (task, file stem, x column, y label): the curves drawn side by side by --plots.
PLOT_FILES = (
    ("gaze", "error_cdf", "threshold_deg", "% of test images within threshold"),
    ("hand", "pck", "threshold_px", "% of joints within threshold"),
    ("gaze", "train_losses", "step", "loss / discriminator accuracy"),
    ("hand", "train_losses", "step", "loss / discriminator accuracy"),
)
# where a curve file is at a revision, first match: the training curves are one CSV per replicate
# (the first replicate's is drawn); revisions from before the replicates had one file
PLOT_PATHS = {"train_losses": ("{task}/train_losses/seed0.csv", "{task}/train_losses.csv")}
_TIMEOUT_S = 600
_GOOD, _BAD, _NEUTRAL = "✅", "❌", "·"


# --- direction rules ----------------------------------------------------------------------------


def direction(key: str) -> str | None:
    """ "lower", "higher", "fifty" (closer to 50 is better) or None (neutral) for a flattened key.

    Precedence: a `.std` key is neutral; `paired.<pair>.mean` is the mean paired improvement of
    the first row over the second (positive = better), so higher; of `realism.oracle` and
    `realism.kid` only the refined side has a direction (the share of the way to real and the
    replicates between: higher; refined's KID: lower); `_acc_pct` under `realism` is an
    automated Turing test where 50% means indistinguishable; then `error`/`shift` (lower is better)
    before `pct`/`pck`/`within` (higher is better), so a key like `error_pct` reads as an error."""
    parts = key.split(".")
    if parts[-1] == "std":
        return None
    if parts[0] == "paired":
        return "higher" if parts[-1] == "mean" else None
    if parts[:2] == ["realism", "oracle"]:  # the synthetic and real sides measure the oracle itself
        return "higher" if parts[2:] in (["refined_fraction", "mean"], ["refined_between"]) else None
    if parts[:2] == ["realism", "kid"]:  # the synthetic side and the real-vs-real floor: neutral
        return "lower" if parts[2:] == ["refined", "mean"] else None
    if "realism" in parts[:-1] and parts[-1].endswith("_acc_pct"):
        return "fifty"
    if "error" in key or "shift" in key:
        return "lower"
    if "pct" in key or "pck" in key or "within" in key:
        return "higher"
    return None


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def worsening(key: str, old, new) -> float | None:
    """How much worse `new` is than `old` in the metric's own units (negative: better); None when
    the key has no direction or either value is not a number."""
    d = direction(key)
    if d is None or not _is_num(old) or not _is_num(new):
        return None
    if d == "lower":
        return new - old
    if d == "higher":
        return old - new
    return abs(new - 50.0) - abs(old - 50.0)


def mark(key: str, old, new) -> str:
    w = worsening(key, old, new)
    if w is None or w == 0:
        return _NEUTRAL
    return _BAD if w > 0 else _GOOD


# --- gates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    spec: str
    file: str | None  # None: the key in whichever metrics files have it
    key: str
    threshold: float
    absolute: bool  # False: percent of |old|


_THRESHOLD = re.compile(r"^(?P<abs>abs=)?(?P<v>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)%?$")


def parse_gate(spec: str) -> Gate:
    """`[FILE:]KEY:PERCENT` or `[FILE:]KEY:abs=VALUE`."""
    metric, sep, threshold = spec.rpartition(":")
    m = _THRESHOLD.match(threshold.strip())
    if not sep or not metric or m is None:
        raise SimganError(
            f"--fail-on {spec!r}: expected METRIC:PERCENT or METRIC:abs=VALUE with a non-negative number, "
            "e.g. rows.refined_4x.mean_error_deg.mean:5 or rows.refined_4x.mean_error_deg.mean:abs=0.5"
        )
    file, _, key = metric.rpartition(":")
    if direction(key) is None:
        raise SimganError(
            f"--fail-on {spec!r}: {key!r} has no better direction (see docs/compare.md), so it cannot regress"
        )
    return Gate(spec, file or None, key, float(m["v"]), bool(m["abs"]))


def check_gates(gates: list[Gate], metrics_diff: dict) -> list[tuple[Gate, str, bool]]:
    """(gate, sentence, failed) for every metrics file the gate applies to. A gate on a key that no
    revision has is a usage error (exit 2): it would never fire, so it is most likely a typo."""
    results = []
    for gate in gates:
        files = [f for f in metrics_diff if gate.file is None or f == gate.file]
        hits = [(f, metrics_diff[f][gate.key]) for f in files if gate.key in metrics_diff[f]]
        if not hits:
            where = gate.file or "any metrics file"
            raise SimganError(f"--fail-on {gate.spec!r}: metric {gate.key!r} is not in {where} at either revision")
        for f, entry in hits:
            results.append((gate, *_check_one(gate, f, entry.get("old"), entry.get("new"))))
    return results


def _check_one(gate: Gate, file: str, old, new) -> tuple[str, bool]:
    limit = f"abs {_num(gate.threshold)}" if gate.absolute else f"{_num(gate.threshold)}%"
    head = f"`{gate.key}` ({file})"
    if new is None:
        return f"{head}: present before ({_num(old)}), missing now: fails (limit {limit})", True
    if old is None:
        return f"{head}: new metric ({_num(new)}), nothing to regress from: passes", False
    w = worsening(gate.key, old, new)
    if w is None:
        raise SimganError(f"--fail-on {gate.spec!r}: {gate.key} in {file} is not a number ({old!r} → {new!r})")
    if gate.absolute:
        amount, failed = f"{_num(abs(w))}", w > gate.threshold
    else:
        rel = math.inf if old == 0 and w > 0 else (100.0 * w / abs(old) if old != 0 else 0.0)
        amount, failed = f"{_num(abs(w))} ({abs(rel):.1f}% of |old|)", rel > gate.threshold
    state = "worse" if w > 0 else ("better" if w < 0 else "unchanged")
    verdict = "fails" if failed else "passes"
    detail = f"{state} by {amount}" if w else state
    return f"{head}: {_num(old)} → {_num(new)}, {detail}: {verdict} (limit {limit})", failed


# --- git / dvc ----------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except FileNotFoundError as e:
        raise SimganError(f"{what}: cannot run {cmd[0]!r} ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise SimganError(f"{what}: no answer within {_TIMEOUT_S} s") from None


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(["git", *args], repo, f"git {args[0]}")


def _dvc_json(repo: Path, *args: str) -> dict:
    # `python -m dvc` runs the DVC installed beside simgan, whatever is first on PATH.
    p = _run([sys.executable, "-m", "dvc", *args, "--json"], repo, f"dvc {' '.join(args[:2])}")
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SimganError(f"dvc {' '.join(args)} in {repo} failed: {last}")
    try:
        out = json.loads(p.stdout or "{}")
    except json.JSONDecodeError:
        raise SimganError(f"dvc {' '.join(args)} in {repo}: expected JSON, got {p.stdout[:200]!r}") from None
    return out if isinstance(out, dict) else {}


def repo_root(repo: str | os.PathLike) -> Path:
    path = Path(repo)
    if not path.is_dir():
        raise SimganError(f"--repo {repo}: not a directory")
    p = _git(path, "rev-parse", "--show-toplevel")
    if p.returncode != 0:
        raise SimganError(f"--repo {repo}: not inside a git repository")
    return Path(p.stdout.strip())


@dataclass(frozen=True)
class Rev:
    name: str  # as the user wrote it
    sha: str | None  # None: the workspace

    @property
    def label(self) -> str:
        return self.name if self.sha is None or self.sha.startswith(self.name) else f"{self.name} ({self.sha[:7]})"


def resolve_rev(repo: Path, rev: str) -> Rev:
    """A git revision, or a DVC experiment by name (the last component of a ref under refs/exps)."""
    if rev == WORKSPACE:
        return Rev(rev, None)
    p = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if p.returncode == 0:
        return Rev(rev, p.stdout.strip())
    refs = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout.split("\n")
    matches = sorted(
        {
            sha
            for line in refs
            if line
            for sha, ref in [line.split(" ", 1)]
            if ref.rsplit("/", 1)[-1] == rev and not ref.startswith(("refs/exps/exec/", "refs/exps/celery/"))
        }
    )
    if len(matches) == 1:
        return Rev(rev, matches[0])
    if len(matches) > 1:
        raise SimganError(f"revision {rev!r}: names {len(matches)} DVC experiments in {repo}; use a commit id")
    raise SimganError(f"revision {rev!r}: not a commit, branch, tag or DVC experiment in {repo}")


def read_at(repo: Path, rev: Rev, path: str) -> str | None:
    """The text of `path` at `rev`, None when the file is not there."""
    if rev.sha is None:
        f = repo / path
        return f.read_text() if f.is_file() else None
    p = _git(repo, "show", f"{rev.sha}:{path}")
    return p.stdout if p.returncode == 0 else None


def load_metrics(repo: Path, rev: Rev) -> dict[str, dict]:
    """{task: metrics dict} for the metrics files present at `rev`."""
    out = {}
    for task, path in METRICS_FILES.items():
        text = read_at(repo, rev, path)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SimganError(f"{path} at {rev.label}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict):
            raise SimganError(f"{path} at {rev.label}: expected a JSON object, got {type(data).__name__}")
        out[task] = data
    return out


def _dvc_revs(a: Rev, b: Rev) -> list[str]:
    # DVC reads the workspace when the second revision is left out.
    return [a.sha] if b.sha is None else [a.sha, b.sha]


def metrics_diff(repo: Path, a: Rev, b: Rev) -> dict:
    """`dvc metrics diff --all`: {file: {key: {"old", "new", ...}}} including unchanged keys, so gates
    and --all can use it; the default table filters to changed keys."""
    return _dvc_json(repo, "metrics", "diff", *_dvc_revs(a, b), "--all")


def params_diff(repo: Path, a: Rev, b: Rev, show_all: bool) -> dict:
    return _dvc_json(repo, "params", "diff", *_dvc_revs(a, b), *(["--all"] if show_all else []))


# --- markdown -----------------------------------------------------------------------------------


def _num(x) -> str:
    """Numbers without float noise (8.0 - 7.1 prints 0.9), strings bare, the rest as JSON."""
    if x is None:
        return "—"
    if isinstance(x, float) and math.isfinite(x):
        return repr(float(f"{x:.10g}"))
    return x if isinstance(x, str) else json.dumps(x)


def changes_table_md(diff: dict, show_all: bool) -> str:
    """One line per changed metric (every metric with show_all). The per-replicate lists
    (`*.values`: one per row metric, realism and label-preservation key and pair) are left out:
    their mean and std are lines of their own, and the lists would double the table."""
    body = []
    for file in sorted(diff):
        for key in sorted(diff[file]):
            if key.rsplit(".", 1)[-1] == "values":
                continue
            e = diff[file][key]
            old, new = e.get("old"), e.get("new")
            if old == new and not show_all:
                continue
            change = rel = "—"
            if _is_num(old) and _is_num(new):
                change = _num(new - old)
                if new - old > 0:
                    change = "+" + change
                rel = f"{100.0 * (new - old) / abs(old):+.1f}%" if old != 0 else "—"
            body.append([f"`{key}`", file, _num(old), _num(new), change, rel, mark(key, old, new)])
    if not body:
        return "_No metric changed._"
    return report.md_table(["Metric", "File", "Old", "New", "Change", "Relative", ""], body)


def params_table_md(diff: dict) -> str:
    body = [
        [f"`{key}`", file, _num(e.get("old")), _num(e.get("new"))]
        for file in sorted(diff)
        for key, e in sorted(diff[file].items())
    ]
    if not body:
        return "_No param changed._"
    return report.md_table(["Param", "File", "Old", "New"], body)


def _comparability_warning(ma: dict, mb: dict) -> str:
    """Numbers from different profiles or seed counts are not comparable; say so up front."""
    notes = []
    for task in sorted(set(ma) & set(mb)):
        for field in ("profile", "seeds", "replicate_seeds"):
            va, vb = ma[task].get(field), mb[task].get(field)
            if va != vb:
                notes.append(f"{task} `{field}` differs ({_num(va)} → {_num(vb)})")
    if not notes:
        return ""
    return "> **Not like for like:** " + "; ".join(notes) + ". Differences below mix settings and results."


def build_report(
    a: Rev,
    b: Rev,
    mdiff: dict,
    pdiff: dict,
    ma: dict,
    mb: dict,
    show_all: bool,
    gate_results: list[tuple[Gate, str, bool]],
    plots: list[str],
) -> str:
    out = [f"# simgan compare: {a.label} → {b.label}"]
    warning = _comparability_warning(ma, mb)
    if warning:
        out.append(warning)
    if gate_results:
        lines = [f"- {_BAD if failed else _GOOD} {sentence}" for _, sentence, failed in gate_results]
        out += ["## Gates (--fail-on)", "\n".join(lines)]
    out += [
        "## Metrics" + (" (all)" if show_all else " that changed"),
        "✅ better, ❌ worse, · neutral (rules in docs/compare.md).",
        changes_table_md(mdiff, show_all),
    ]
    out += ["## Params" + (" (all)" if show_all else " that changed"), params_table_md(pdiff)]
    if plots:
        out += ["## Plots", "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)]
    for rev, m in ((a, ma), (b, mb)):
        out.append(f"## Results at {rev.label}")
        try:
            out.append(report.report_md(m, level=3) if m else f"_No metrics at {rev.label}._")
        except SimganError as e:
            raise SimganError(f"metrics at {rev.label}: {e}") from None
    return "\n\n".join(s.rstrip("\n") for s in out) + "\n"


# --- plots --------------------------------------------------------------------------------------


def _read_csv(repo: Path, rev: Rev, path: str) -> dict[str, list[float]] | None:
    """The numeric columns of a CSV, {name: values}; an empty cell is NaN (a gap in the curve).
    A column whose every filled cell is text is a label (the training log's `phase`) and is left
    out; a column mixing numbers and text is malformed and named."""
    text = read_at(repo, rev, path)
    if text is None:
        return None
    rows = list(csv.reader(io.StringIO(text)))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    cols: dict[str, list[float]] = {}
    for i, name in enumerate(header):
        values, first_text = [], None
        for lineno, row in enumerate(body, start=2):
            cell = row[i].strip() if i < len(row) else ""
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                first_text = first_text or (lineno, cell)
        if first_text is None:
            cols[name] = values
        elif any(not math.isnan(v) for v in values):
            raise SimganError(
                f"{path} at {rev.label}, line {first_text[0]}, column {name!r}: "
                f"expected a number, got {first_text[1]!r}"
            )
    return cols


def write_plots(repo: Path, a: Rev, b: Rev, out_dir: Path) -> list[Path]:
    """One PNG per curve file present at either revision: A left, B right, same y axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or here
    import matplotlib.pyplot as plt

    written = []
    for task, stem, x_col, y_label in PLOT_FILES:
        data = []
        for rev in (a, b):
            for pattern in PLOT_PATHS.get(stem, (f"{{task}}/{stem}.csv",)):
                path = "plots/" + pattern.format(task=task)
                cols = _read_csv(repo, rev, path)
                if cols is not None:
                    break
            data.append((rev, cols))
        if all(d is None for _, d in data):
            continue
        # One colour per curve name across both panels, so a row keeps its colour even when the
        # revisions have different columns.
        names = list(dict.fromkeys(n for _, cols in data if cols for n in cols if n != x_col))
        colour = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, (rev, cols) in zip(axes, data):
            ax.set_title(f"{task} {stem} @ {rev.label}", fontsize=9)
            if cols is None or x_col not in cols:
                ax.text(
                    0.5,
                    0.5,
                    f"no {path} at {rev.label}" if cols is None else f"no column {x_col}",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                continue
            for name, ys in cols.items():
                if name != x_col:
                    ax.plot(cols[x_col], ys, label=name, linewidth=1.2, color=colour[name])
            ax.set_xlabel(x_col)
            ax.set_ylabel(y_label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        target = out_dir / f"{task}_{stem}.png"
        try:
            with atomic_path(target, suffix=".png") as tmp:
                fig.savefig(tmp, format="png", dpi=100)
        except OSError as e:
            raise SimganError(f"--plots {out_dir}: cannot write {target} ({e.strerror or e})") from None
        finally:
            plt.close(fig)
        written.append(target)
    return written


# --- dvc.lock against the workspace (CI) --------------------------------------------------------

# What `dvc status` says of an output that is only absent: a clean clone has no data (no DVC
# remote); every output DVC caches is "not in cache" there, and one it does not is "deleted".
_MISSING_OUT = ("not in cache", "deleted")


@dataclass(frozen=True)
class LockCheck:
    stale: list[tuple[str, str]]  # (stage, what changed since the run dvc.lock records)
    stages: int
    missing_outs: int  # outputs absent from the workspace (expected without the data)


def _under(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _param_changes(dep, changed: dict[str, str]) -> list[str]:
    """One line per changed leaf of the params DVC names (`gan.gaze` modified -> which key)."""
    recorded = (dep.hash_info.value if dep.hash_info else None) or {}
    current = dep.read_params()
    old, new = {}, {}
    for param in changed:
        for values, flat in ((recorded, old), (current, new)):
            if isinstance(values.get(param), dict):
                flat.update(flatten(values[param], f"{param}."))
            elif param in values:
                flat[param] = values[param]
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"param {key} deleted from {dep} (was {_num(old[key])})")
        elif key not in old:
            lines.append(f"param {key} new in {dep}: {_num(new[key])}, not in dvc.lock")
        elif old[key] != new[key]:
            lines.append(f"param {key}: {_num(old[key])} in dvc.lock, {_num(new[key])} in {dep}")
    return lines


def _missing_dep(dep, outs: dict, git_ignored) -> str | None:
    """None when an absent dep is only data this checkout lacks: an upstream stage's output, or a
    path git ignores (raw inputs, a stage's undeclared side files); else what is wrong."""
    path = os.path.normpath(dep.fs_path)
    if path in outs:
        stage, out = outs[path]
        if dep.hash_info and out.hash_info and dep.hash_info != out.hash_info:
            return (
                f"dep {dep} is recorded as {dep.hash_info.value}, but {stage.name} last made "
                f"{out.hash_info.value} (dvc.lock): {stage.name} reran, this stage did not"
            )
        return None
    if any(_under(path, o) or _under(o, path) for o in outs):  # a folder of outputs, or inside one
        return None
    if git_ignored(path):
        return None
    return f"dep {dep} deleted, and neither a stage makes it nor does git ignore it"


def _locked_names(lock: Path) -> set[str]:
    """The stage names a dvc.lock records. Parsed here once: DVC parses the lock once per stage
    (ruamel, ~1 s each for this project's 30 stages on a loaded machine)."""
    import yaml

    if not lock.exists():
        return set()
    try:
        data = yaml.load(lock.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise SimganError(f"{lock}: not valid YAML: {str(e).splitlines()[0]}") from None
    stages = data.get("stages") if isinstance(data, dict) else None
    return set(stages) if isinstance(stages, dict) else set()


def _stage_status(stage, entries: list, outs: dict, locked: set[str], git_ignored) -> tuple[list[str], int]:
    """(what is stale, how many outputs are only absent) for one stage's `dvc status` entries."""
    if stage.cmd and stage.name not in locked:
        return ["not in dvc.lock: the stage never ran"], 0
    deps = {str(d): d for d in stage.deps}
    stale, missing = [], 0
    for entry in entries:
        if isinstance(entry, str):
            if entry != "always changed":
                stale.append(f"{entry} (dvc.yaml)")
            continue
        for path, state in entry.get("changed deps", {}).items():
            if isinstance(state, dict):
                stale += _param_changes(deps[path], state)
            elif state != "deleted":
                stale.append(f"dep {path} {state}")
            elif why := _missing_dep(deps[path], outs, git_ignored):
                stale.append(why)
        for path, state in entry.get("changed outs", {}).items():
            if state in _MISSING_OUT:
                missing += 1
            else:
                stale.append(f"out {path} {state}: differs from the run dvc.lock records")
    return list(dict.fromkeys(stale)), missing


def check_lock(repo: str | os.PathLike = ".") -> LockCheck:
    """Which stages dvc.lock no longer describes: a code or data dep, a param, the command or an
    output that differs from what the lock records, a dep that no stage makes and that is gone,
    or a dep whose hash in the lock differs from the hash its upstream stage's output has there
    (that stage reran, this one did not). An output that is only absent, and a dep that is an
    upstream output and therefore absent, is what a clone without the data looks like: not stale."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    if not Path(repo).is_dir():
        raise SimganError(f"--repo {repo}: not a directory")
    stale, missing = [], 0
    try:
        with Repo(str(repo)) as r:
            status = r.status()
            stages = list(r.index.stages)
            outs = {os.path.normpath(o.fs_path): (s, o) for s in stages for o in s.outs}
            locked: dict[Path, set[str]] = {}  # dvc.lock -> its stage names

            @functools.cache
            def git_ignored(path: str) -> bool:
                return _git(Path(r.root_dir), "check-ignore", "-q", path).returncode == 0

            for stage in stages:
                lock = Path(stage.dvcfile.path).with_suffix(".lock")
                if lock not in locked:
                    locked[lock] = _locked_names(lock)
                found, absent = _stage_status(stage, status.get(stage.addressing, []), outs, locked[lock], git_ignored)
                name = (
                    stage.name
                    if os.path.dirname(stage.dvcfile.path) == r.root_dir
                    else f"{os.path.relpath(stage.dvcfile.path, r.root_dir)}:{stage.name}"
                )
                stale += [(name, what) for what in found]
                missing += absent
    except NotDvcRepoError:
        raise SimganError(f"--repo {repo}: not a DVC repository (no .dvc folder here or above)") from None
    except DvcException as e:
        raise SimganError(f"dvc status in {repo}: {e}") from None
    return LockCheck(stale, len(stages), missing)


def _lock_check_cmd(args) -> int:
    result = check_lock(args.repo)
    if result.stale:
        print(
            f"simgan lock-check: dvc.lock is stale for {len({s for s, _ in result.stale})} of {result.stages} stages "
            "(run `dvc repro` and commit dvc.lock):",
            file=sys.stderr,
        )
        for stage, what in result.stale:
            print(f"  {stage}: {what}", file=sys.stderr)
        return 1
    print(
        f"simgan lock-check: dvc.lock matches dvc.yaml, params and code for all {result.stages} stages"
        + (
            f" ({result.missing_outs} output{'s' * (result.missing_outs != 1)} absent: data not pulled, not checked)"
            if result.missing_outs
            else ""
        )
    )
    return 0


# --- command ------------------------------------------------------------------------------------


def _check_writable(path: str, option: str, is_dir: bool) -> None:
    """Fail before any slow work when `path` cannot be created: its nearest existing ancestor must
    be a writable directory (a path under a regular file fails even for root)."""
    target = Path(path)
    if target.exists() and target.is_dir() != is_dir:
        raise SimganError(
            f"{option} {path}: expected {'a directory' if is_dir else 'a file'}, "
            f"got an existing {'file' if is_dir else 'directory'}"
        )
    parent = (target if is_dir else target.parent).resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SimganError(f"{option} {path}: cannot create it: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SimganError(f"{option} {path}: cannot create it: no write permission in {parent}")


def compare(
    repo: str | os.PathLike = ".",
    a: str = "HEAD~1",
    b: str = WORKSPACE,
    *,
    md: str | None = None,
    plots: str | None = None,
    fail_on: list[str] | None = None,
    show_all: bool = False,
) -> tuple[str, int]:
    """The report and the exit code (1 when a --fail-on gate fails, else 0)."""
    gates = [parse_gate(s) for s in fail_on or []]  # before any slow work, so typos fail fast
    if md:
        _check_writable(md, "--md", is_dir=False)
    if plots:
        _check_writable(plots, "--plots", is_dir=True)
    root = repo_root(repo)
    ra, rb = resolve_rev(root, a), resolve_rev(root, b)
    if ra.sha is None:
        raise SimganError("revision A cannot be the workspace: give a commit as A (B defaults to the workspace)")
    ma, mb = load_metrics(root, ra), load_metrics(root, rb)
    # Each DVC call spends most of its time importing DVC, so run the two side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending_params = pool.submit(params_diff, root, ra, rb, show_all)
        mdiff = metrics_diff(root, ra, rb)
        pdiff = pending_params.result()
    gate_results = check_gates(gates, mdiff)
    links: list[str] = []
    if plots:
        pngs = write_plots(root, ra, rb, Path(plots))
        base = Path(md).resolve().parent if md else Path.cwd()
        links = [os.path.relpath(p.resolve(), base) for p in pngs]
    text = build_report(ra, rb, mdiff, pdiff, ma, mb, show_all, gate_results, links)
    if md:
        try:
            write_text_atomic(md, text)
        except OSError as e:
            raise SimganError(f"--md {md}: cannot write the report ({e.strerror or e})") from None
    return text, 1 if any(failed for _, _, failed in gate_results) else 0


def _cmd(args) -> int:
    text, rc = compare(args.repo, args.a, args.b, md=args.md, plots=args.plots, fail_on=args.fail_on, show_all=args.all)
    sys.stdout.write(text)
    if rc:
        print("simgan compare: a --fail-on gate failed (see 'Gates' above)", file=sys.stderr)
    return rc


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="diff metrics and params between two revisions, with results tables",
        description="Compare metrics (dvc metrics diff) and params (dvc params diff) between revisions A "
        "and B, mark each change better/worse, and print both revisions' results tables. "
        "Exit 1 when a --fail-on gate fails, 2 on a usage error. See docs/compare.md.",
    )
    p.add_argument("a", nargs="?", default="HEAD~1", metavar="A", help="base revision (default: HEAD~1)")
    p.add_argument(
        "b",
        nargs="?",
        default=WORKSPACE,
        metavar="B",
        help="revision or DVC experiment name to compare with A (default: the workspace)",
    )
    p.add_argument("--repo", default=".", metavar="DIR", help="the git+DVC repository (default: .)")
    p.add_argument("--md", metavar="FILE", help="also write the markdown report to FILE")
    p.add_argument("--plots", metavar="DIR", help="write PNGs of both revisions' curves side by side to DIR")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="METRIC:THRESHOLD",
        help="exit 1 when METRIC ([FILE:]KEY) gets worse by more than THRESHOLD percent of its "
        "old value, or by more than VALUE with abs=VALUE; repeatable",
    )
    p.add_argument("--all", action="store_true", help="list unchanged metrics and params too")
    p.set_defaults(func=_cmd)
    lc = subparsers.add_parser(
        "lock-check",
        help="fail when dvc.lock no longer matches dvc.yaml, params.yaml or the code (for CI)",
        description="Exit 1, naming each stage and the dep, param or command that changed, when dvc.lock "
        "does not record a run of the current dvc.yaml, params and code; absent data and "
        "models (a clone without a DVC remote) are expected and pass. Exit 2 on a usage "
        "error. See docs/compare.md.",
    )
    lc.add_argument("--repo", default=".", metavar="DIR", help="the DVC repository (default: .)")
    lc.set_defaults(func=_lock_check_cmd)
