"""The README's examples run as written, and its quick start names the commands .ci/run uses."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_quick_start_is_two_make_commands_and_ci_runs_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.MULTILINE)
    assert commands == ["make repro", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_setup_says_where_the_venv_is_and_what_the_system_python_gives():
    quick = " ".join(README.split("## Quick start", 1)[1].split("\n## ", 1)[0].split())
    assert "`make setup` alone creates `.venv`" in quick
    assert "`. .venv/bin/activate`" in quick and "`.venv/bin/python`" in quick and "`.venv/bin/dvc`" in quick
    assert "ModuleNotFoundError: No module named 'h5py'" in quick
    assert re.search(r"^setup:", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)  # the target it names
