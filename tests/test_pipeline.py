"""The main job end to end on the tiny profile: a real `dvc repro` in a temporary copy of the
repository, real files, both tasks. Then: a second repro does nothing, and changing only a
downstream param reruns only the stages that depend on it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One tiny `dvc repro` (the `tiny_run` fixture) serves every test here: the group keeps them on one
# xdist worker (`--dist loadgroup`), where a plain `-n 2` could run the fixture on both.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]


def _env() -> dict:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # stage commands run `python -m stages...`
    env.update(
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        GIT_AUTHOR_NAME="simgan tests",
        GIT_AUTHOR_EMAIL="tests@localhost",
        GIT_COMMITTER_NAME="simgan tests",
        GIT_COMMITTER_EMAIL="tests@localhost",
    )
    return env


def _run(args, cwd, check=True):
    r = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def copy_repo(dst: Path) -> Path:
    """The working tree as a fresh clone would have it (tracked + untracked-not-ignored files)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    for rel in ("dvc.lock",):  # start from scratch: no previous run
        (dst / rel).unlink(missing_ok=True)
    for d in ("metrics", "plots", "reports"):
        shutil.rmtree(dst / d, ignore_errors=True)
    _run([sys.executable, "-m", "simgan.cli", "params", "apply", "profiles/tiny.yaml"], dst)
    _run(["git", "init", "-q"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "tiny profile"], dst)  # DVC refuses an empty git repo
    return dst


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="session")  # not module: xdist interleaves other modules, which tore it down
def tiny_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    first = _run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo, first.stdout


def test_tiny_profile_reproduces_all_metrics(tiny_run):
    repo, out = tiny_run
    assert {
        "prepare@gaze",
        "adversarial@hand",
        "refine@gaze",
        "estimator@gaze-refined-4x",
        "evaluate@hand",
        "report",
    } <= _ran_stages(out)
    gaze = json.loads((repo / "metrics" / "gaze.json").read_text())
    hand = json.loads((repo / "metrics" / "hand.json").read_text())
    for row in (
        "synthetic_1x",
        "synthetic_4x",
        "refined_1x",
        "refined_4x",
        "real_1x",
        "real_4x",
        "synthetic_aug_1x",
        "refined_aug_1x",
        "constant",
        "knn_synthetic",
    ):
        cell = gaze["rows"][row]
        assert 0 <= cell["mean_error_deg"]["mean"] <= 180 and cell["mean_error_deg"]["std"] >= 0, row
        assert 0 <= cell["within7_pct"]["mean"] <= 100, row
    for row in ("synthetic_1x", "synthetic_3x", "refined_2x", "real_3x", "constant", "refined_aug_1x"):
        assert 0 <= hand["rows"][row]["pck5_pct"]["mean"] <= 100, row
    from simgan.device import KERNEL_CAP_VARIABLES, cpu_kind

    for m in (gaze, hand):
        assert m["seeds"] == 2 and m["profile"] == "tiny"
        assert 0 <= m["realism"]["refined_vs_real_acc_pct"] <= 100
        # which kernels made the numbers, as a reader on another CPU needs to know
        assert m["numerics"]["cpu_kind"] == cpu_kind() and isinstance(m["numerics"]["gan_bf16"], bool)
        assert set(KERNEL_CAP_VARIABLES) | {"aten_capability"} <= set(m["numerics"])
    assert gaze["label_preservation"]["pupil_shift_px"]["mean"] >= 0
    for rel in (
        "plots/gaze/error_cdf.csv",
        "plots/hand/pck.csv",
        "plots/gaze/train_losses/seed0.csv",
        "plots/hand/train_losses/seed1.csv",
        "reports/results.md",
        "reports/gaze/samples/seed0.png",
        "reports/hand/samples/seed1.png",
        "reports/hand/curves.png",
        "reports/gaze/size.png",
        "reports/hand/losses.png",
        "reports/gaze/predictions.parquet",
        "data/gaze/refined/seed0.h5",
        "data/gaze/refined/seed1.h5",
        "models/hand/refiners/seed0.pt",
        "models/hand/refiners/seed1.pt",
        "models/gaze/pretrained/seed1.pt",
    ):
        assert (repo / rel).stat().st_size > 0, rel
    # two replicates, two GANs: their refined sets differ; their labels are the synthetic set's
    import h5py

    with h5py.File(repo / "data/gaze/refined/seed0.h5") as a, h5py.File(repo / "data/gaze/refined/seed1.h5") as b:
        assert a["images"][:].tobytes() != b["images"][:].tobytes()
        assert a.attrs["replicate"] == 0 and b.attrs["replicate"] == 1
    assert (
        "| Training data" in (repo / "reports" / "results.md").read_text()
        or "|" in (repo / "reports" / "results.md").read_text()
    )


def test_second_repro_does_nothing(tiny_run):
    repo, _ = tiny_run
    again = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert _ran_stages(again.stdout) == set(), again.stdout


def test_lock_check_passes_on_a_clone_then_names_each_edit(tiny_run, tmp_path, capsys):
    """The real dvc.yaml (foreach stages, folder deps, uncached report outputs): after a real
    `dvc repro`, a clone passes `simgan lock-check`; a code or params edit names the stages and
    the key."""
    from test_ci import clone, lock_check

    repo, _ = tiny_run
    _run(["git", "add", "-A"], repo)
    # --allow-empty: the tests share this repo, and xdist may run the other committing one first
    _run(["git", "commit", "-q", "--allow-empty", "-m", "tiny run"], repo)
    c = clone(repo, tmp_path / "clone")
    rc, out = lock_check(c, capsys)
    assert rc == 0, out
    (c / "simgan" / "losses.py").write_text((c / "simgan" / "losses.py").read_text() + "\n# edited\n")
    text = (c / "params.yaml").read_text()
    old = re.search(r"\n      lam: ([0-9.]+)", text).group(1)  # gaze's, the first
    new = "0.5" if old != "0.5" else "0.25"
    edited = re.sub(r"(\n      lam: )[0-9.]+", rf"\g<1>{new}", text, count=1)
    assert edited != text
    (c / "params.yaml").write_text(edited)
    rc, out = lock_check(c, capsys)
    assert rc == 1
    lines = out.splitlines()
    for stage in ("pretrain@gaze", "adversarial@gaze", "pretrain@hand", "adversarial@hand"):
        assert f"  {stage}: dep simgan/losses.py modified" in lines, out
    assert (
        f"  pretrain@gaze: param gan.gaze.train.lam: {float(old)} in dvc.lock, {float(new)} in params.yaml" in lines
    ), out
    assert not any(line.startswith(("  pretrain@hand: param", "  estimator@", "  refine@")) for line in lines), out


def test_downstream_param_change_reruns_only_dependents(tiny_run):
    repo, _ = tiny_run
    params = (repo / "params.yaml").read_text()
    changed = params.replace("knn_k: 5,", "knn_k: 3,", 1)  # evaluate.gaze: the last numeric stage
    assert changed != params
    (repo / "params.yaml").write_text(changed)
    out = _run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    assert _ran_stages(out) == {"evaluate@gaze", "report"}, out


def test_ablation_as_dvc_experiment_is_compared_like_a_commit(tiny_run):
    """Issue 7: `dvc exp run -S` runs an ablation on top of the committed run and `simgan compare`
    reads the experiment by name."""
    repo, _ = tiny_run
    _run(["git", "add", "-A"], repo)
    # --allow-empty: the tests share this repo, and xdist may run the other committing one first
    _run(["git", "commit", "-q", "--allow-empty", "-m", "tiny run"], repo)
    exp = _run(
        [sys.executable, "-m", "dvc", "exp", "run", "-n", "no-history", "-S", "gan.gaze.train.history_size=0"], repo
    )
    ran = _ran_stages(exp.stdout)
    assert "adversarial@gaze" in ran and not any(s.startswith(("prepare", "adversarial@hand")) for s in ran), ran
    out = _run([sys.executable, "-m", "simgan.cli", "compare", "HEAD", "no-history", "--repo", str(repo)], repo).stdout
    assert "gan.gaze.train.history_size" in out and "## Results at no-history" in out


def test_training_log_in_a_repository_without_commits_says_what_to_do(tmp_path, monkeypatch):
    # dvclive fails on start in a fresh `git init` with a bare "Empty git repo" (dvclive #522);
    # the adversarial stage turns that into one error with the fix, before training starts.
    sys.path.insert(0, str(ROOT))
    from simgan.io import SimganError
    from stages.adversarial import training_log

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    with pytest.raises(SimganError, match=r"needs at least one commit: run `git add -A && git commit -m init`"):
        training_log(tmp_path / "reports" / "gaze" / "dvclive")
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], check=True
    )
    with training_log(tmp_path / "reports" / "gaze" / "dvclive") as live:
        live.log_metric("loss", 1.0)
    assert (tmp_path / "reports" / "gaze" / "dvclive" / "metrics.json").exists()
