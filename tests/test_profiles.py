"""Profiles: `simgan params apply` edits params.yaml in place (comments, key order and untouched
lines kept), and profiles/paper.yaml gives exactly the paper's networks and training settings
(Shrivastava et al. 2017, sec. 3.1 and 3.2, Algorithm 1) on top of the CPU default."""

from __future__ import annotations

import difflib
import inspect
import re
import shutil
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from simgan.cli import main
from simgan.config import Params, deep_merge, flatten
from simgan.nets import Discriminator, Refiner, discriminator_preset, refiner_preset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stages.gan_setup import train_config


def applied(tmp_path: Path, profile: str | Path) -> tuple[str, str]:
    """(params.yaml before, after) `simgan params apply PROFILE` on a copy of the project's."""
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    assert main(["params", "apply", str(profile), "--params", str(target)]) == 0
    return (ROOT / "params.yaml").read_text(), target.read_text()


def comments(text: str) -> list[str]:
    """Every comment, whole-line or after a value, in file order."""
    return [m.group(0).strip() for line in text.splitlines() if (m := re.search(r"(^|\s)#.*$", line))]


def with_defaults(cls, kwargs: dict) -> dict:
    """The constructor arguments a network is built with: its defaults, then `kwargs`."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {**{p.name: p.default for p in params if p.default is not inspect.Parameter.empty}, **kwargs}


@pytest.mark.parametrize("profile", ["profiles/paper.yaml", "profiles/tiny.yaml"])
def test_apply_keeps_comments_order_and_every_untouched_line(tmp_path, profile):
    before, after = applied(tmp_path, ROOT / profile)
    assert comments(after) == comments(before) and len(comments(before)) >= 39  # all were dropped
    overrides = Params.load(ROOT / profile).data
    assert yaml.safe_load(after) == deep_merge(yaml.safe_load(before), overrides)
    keys_before, keys_after = list(flatten(yaml.safe_load(before))), list(flatten(yaml.safe_load(after)))
    assert [k for k in keys_after if k in keys_before] == keys_before  # order kept; new keys added
    # Every line the edit touched holds a key the profile sets.
    set_names = {k.rsplit(".", 1)[-1] for k in flatten(overrides)}
    touched = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line.startswith("- ")]
    assert touched and all(any(re.search(rf"\b{re.escape(n)}:", line) for n in set_names) for line in touched), touched


def test_apply_of_the_values_already_there_changes_no_byte(tmp_path):
    profile = tmp_path / "same.yaml"
    profile.write_text(
        "profile: default\ndata:\n  gaze: {seed: 100, folder: {size: 35x55}}\ngan:\n  gaze:\n"
        "    train: {lr: 0.0002, betas: [0.5, 0.999]}\n"
    )
    before, after = applied(tmp_path, profile)
    assert after == before


def test_apply_writes_a_null_as_null_in_block_and_flow_style(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text("a:\n  b: null  # unset\n  c: 1\nd: {e: 2, f: null}\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("a:\n  c: null\nd: {e: null}\n")
    assert main(["params", "apply", str(profile), "--params", str(target)]) == 0
    assert target.read_text() == "a:\n  b: null  # unset\n  c: null\nd: {e: null, f: null}\n"


def test_bad_profile_exits_2_and_leaves_params_unchanged(tmp_path, capsys):
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    (tmp_path / "bad.yaml").write_text("gan: [unclosed\n")
    assert main(["params", "apply", str(tmp_path / "bad.yaml"), "--params", str(target)]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err
    assert target.read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("task", ["gaze", "hand"])
def test_paper_profile_builds_exactly_the_papers_networks(tmp_path, task):
    _, after = applied(tmp_path, ROOT / "profiles/paper.yaml")
    p = Params(yaml.safe_load(after))
    assert p.get(f"gan.{task}.preset") == "paper"
    # What stages/gan_setup.py builds: the preset, then the params' keys over it.
    refiner = {**refiner_preset(task, p.get(f"gan.{task}.preset")), **p.section(f"gan.{task}.refiner")}
    disc = {**discriminator_preset(task, p.get(f"gan.{task}.preset")), **p.section(f"gan.{task}.discriminator")}
    assert with_defaults(Refiner, refiner) == with_defaults(Refiner, refiner_preset(task, "paper"))
    assert with_defaults(Discriminator, disc) == with_defaults(Discriminator, discriminator_preset(task, "paper"))
    # the paper's refiner: no residual skip, zero padding, no noise input; local adversarial loss
    assert (refiner.get("residual", False), refiner.get("padding_mode", "zeros"), refiner.get("noise_channels", 0)) == (
        False,
        "zeros",
        0,
    )
    assert disc.get("global_output", False) is False


@pytest.mark.parametrize("task, pretrain_refiner_steps", [("gaze", 1000), ("hand", 500)])
def test_paper_profile_trains_with_the_papers_settings(tmp_path, task, pretrain_refiner_steps):
    _, after = applied(tmp_path, ROOT / "profiles/paper.yaml")
    cfg = train_config(task, Params(yaml.safe_load(after)))
    # Algorithm 1: R on self-regularization alone, then D alone for 200 steps, then K_g = 2 refiner
    # updates per K_d = 1 discriminator update, with the history buffer; sec. 3.1: lr 0.001, batch 512
    assert (cfg.pretrain_refiner_steps, cfg.pretrain_discriminator_steps, cfg.k_g, cfg.k_d) == (
        pretrain_refiner_steps,
        200,
        2,
        1,
    )
    assert (cfg.lr, cfg.batch_size, cfg.psi, cfg.crop) == (0.001, 512, "identity", 0)
    assert (cfg.ema, cfg.r1) == (0.0, 0.0)  # the last weights, no gradient penalty
    assert cfg.history_size >= cfg.batch_size
    header = (ROOT / "profiles/paper.yaml").read_text().splitlines()[0]
    assert "Shrivastava et al. 2017, sec. 3.1" in header and "REFERENCE" not in header


def test_ruamel_yaml_is_a_declared_dependency_the_installed_version_meets():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == "ruamel.yaml")
    assert req.specifier.contains(version("ruamel.yaml"))


def _with_user_task(tmp_path: Path, sections: str) -> Path:
    """A copy of the project's params.yaml with task `blobs` and the given sections of it added
    (as a user pastes them, through the same edit-in-place merge)."""
    target = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", target)
    (tmp_path / "task.yaml").write_text(sections)
    assert main(["params", "apply", str(tmp_path / "task.yaml"), "--params", str(target)]) == 0
    return target


BLOBS = """tasks:
  blobs: {curve: error_cdf}
gan:
  blobs:
    train: {steps: 400, batch_size: 32}   # mine
estimator:
  blobs: {head: regression, base_n: 1000, steps: 400, batch_size: 32, lr: 0.001}
"""


def test_quick_profile_fills_in_the_task_named_and_leaves_out_a_section_it_lacks(tmp_path, capsys):
    """Issue 23: profiles/quick.yaml's `<task>` keys address the task --task names; its evaluate
    section is left out, with a line, where params.yaml has no evaluate.blobs (a user who only
    refines); every other line of the file stays as it was, comments included."""
    target = _with_user_task(tmp_path, BLOBS)
    before = target.read_text()
    capsys.readouterr()
    assert main(["params", "apply", str(ROOT / "profiles/quick.yaml"), "--task", "blobs", "--params", str(target)]) == 0
    err = capsys.readouterr().err
    assert f"quick.yaml: key 'evaluate.<task>' left out: {target} has no section 'evaluate.blobs'" in err, err
    after = target.read_text()
    assert comments(after) == comments(before) and "# mine" in after
    p = Params(yaml.safe_load(after))
    assert p.get("gan.blobs.train.steps") == 60 and p.get("gan.blobs.refiner") == {"channels": 16, "blocks": 2}
    assert p.get("estimator.blobs.base_n") == 200 and p.get("estimator.blobs.lr") == 0.001
    assert (
        "<task>:" not in after and not any("<task>" in k for k in flatten(p.data)) and "blobs" not in p.data["evaluate"]
    )
    changed = {k for k, v in flatten(p.data).items() if flatten(yaml.safe_load(before)).get(k, object()) != v}
    assert all(k in ("profile", "seeds") or ".blobs." in k for k in changed), sorted(changed)
    cfg = train_config("blobs", p)
    assert (cfg.pretrain_refiner_steps, cfg.steps, cfg.batch_size, cfg.history_size) == (20, 60, 16, 640)
    # the same values as `dvc exp run -S` arguments
    assert (
        main(["params", "overrides", str(ROOT / "profiles/quick.yaml"), "--task", "blobs", "--params", str(target)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "-S 'gan.blobs.train.steps=60'" in printed and "<task>" not in printed and "evaluate." not in printed


@pytest.mark.parametrize(
    "profile, task, message",
    [
        (
            "profiles/quick.yaml",
            None,
            r"quick.yaml: key 'gan.<task>': the profile is for a task you name; expected --task",
        ),
        ("profiles/quick.yaml", "blobz", r"params.yaml: key 'tasks.blobz': missing \(--task of .*quick.yaml\)"),
        ("profiles/quick.yaml", "my-task", r"--task 'my-task' \(for .*quick.yaml\): expected a task name"),
        ("profiles/tiny.yaml", "blobs", r"tiny.yaml: no '<task>' key for --task blobs to fill in"),
        ("clash.yaml", "blobs", r"clash.yaml: key 'gan.<task>': sets the same section as 'gan.blobs'"),
    ],
)
def test_a_task_profile_names_the_file_and_key_of_a_mistake_and_writes_nothing(
    tmp_path, capsys, profile, task, message
):
    target = _with_user_task(tmp_path, BLOBS)
    before = target.read_text()
    (tmp_path / "clash.yaml").write_text("gan:\n  blobs: {train: {steps: 1}}\n  <task>: {train: {steps: 2}}\n")
    path = tmp_path / profile if profile == "clash.yaml" else ROOT / profile
    capsys.readouterr()
    argv = ["params", "apply", str(path), "--params", str(target)] + (["--task", task] if task else [])
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert target.read_text() == before
