"""stages/common.py, what every stage shares: the params every stage reads (tasks, seeds) and
run_stage's handling of errors and Ctrl-C, in real stage processes where it matters."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simgan.config import Params, ParamsError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages/ is run as `python -m stages...` from the root, not installed
from stages.common import check_task, pipeline_tasks, seeds_param


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SIMGAN_DEBUG", None)  # the one-line contract is what is under test
    return env


def _evaluate_stage(cwd: Path) -> subprocess.CompletedProcess:
    """`python -m stages.evaluate gaze` in `cwd`, as DVC runs it."""
    return subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "gaze"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "seeds, expected",
    [
        ([0, 0, 0], r"expected distinct seeds, got \[0, 0, 0\] \(0 repeated\)"),
        ([0, 1, 1], r"expected distinct seeds.*\(1 repeated\)"),
        ([0, 1.5], r"expected a non-empty list of integers >= 0, got \[0, 1.5\]"),
        ([True, 1], "expected a non-empty list of integers >= 0"),
        ([], "expected a non-empty list of integers >= 0"),
        # a replicate's seed is added to the GAN's and the refinement's base seeds: never negative
        ([0, -1], r"expected a non-empty list of integers >= 0, got \[0, -1\]"),
        ("0 1 2", "expected list"),
    ],
)
def test_seeds_must_be_distinct_integers(seeds, expected):
    """`seeds: [0, 0, 0]` used to be reported as "3 seeds" with a std of 0."""
    with pytest.raises(ParamsError, match=r"^params.yaml: key 'seeds': " + expected):
        seeds_param(Params({"seeds": seeds}, "params.yaml"))
    assert seeds_param(Params({"seeds": [2, 0, 1]}, "params.yaml")) == [2, 0, 1]
    # simgan.config's, re-exported for the stages (simgan refine reads it too)
    from simgan.config import seeds_param as library_seeds_param

    assert seeds_param is library_seeds_param


def test_every_stage_checks_every_task_name_and_tasks_must_not_be_empty(tmp_path):
    """A task named '../evil' got DVC's "Parameters 'data.../evil' are missing" (DVC runs no
    project code before a stage); now the first stage that runs, gaze's too, names the key.
    `tasks: {}` failed on a missing data file."""
    evil = Params({"tasks": {"gaze": {}, "../evil": {}}}, "params.yaml")
    with pytest.raises(ParamsError, match=r"^params.yaml: key 'tasks.../evil': expected a task name of letters"):
        check_task("gaze", evil)
    with pytest.raises(ParamsError, match=r"^params.yaml: key 'tasks': expected at least one task, got \{\}$"):
        pipeline_tasks(Params({"tasks": {}}, "params.yaml"))
    (tmp_path / "params.yaml").write_text("tasks: {}\n")
    r = _evaluate_stage(tmp_path)
    assert (r.returncode, r.stderr) == (
        2,
        "stage evaluate: error: params.yaml: key 'tasks': expected at least one task, got {}\n",
    )


def test_evaluate_names_a_recheck_threshold_that_is_no_percentage(tmp_path):
    """evaluate.<task>.realism_recheck_below was checked in the library only, whose message named
    the argument, not the key; the stage now refuses it before it reads any data."""
    text = (ROOT / "params.yaml").read_text()
    assert text.count("realism_recheck_below: 90,") == 2
    (tmp_path / "params.yaml").write_text(text.replace("realism_recheck_below: 90,", "realism_recheck_below: 120,"))
    r = _evaluate_stage(tmp_path)
    assert (r.returncode, r.stderr) == (
        2,
        "stage evaluate: error: params.yaml: key 'evaluate.gaze.realism_recheck_below': "
        "expected a percentage in [0, 100], got 120\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


STAGE = """
import sys
import time

from simgan.io import atomic_path
from stages.common import run_stage


def main(argv):
    with atomic_path("out.txt") as tmp:
        tmp.write_text("half of it")
        print("writing", flush=True)
        # short sleeps, as a stage's compute loop: a signal that lands on one of torch's threads
        # interrupts no long sleep of the main thread, which sees it when the sleep ends
        for _ in range(2400):
            time.sleep(0.05)


if __name__ == "__main__":
    run_stage(main, resumes=sys.argv[1:] == ["resumes"])
"""


@pytest.mark.parametrize("resumes, then", [(False, "run it again"), (True, "resume from the last checkpoint")])
def test_ctrl_c_is_one_line_exit_130_and_no_output(tmp_path, resumes, then):
    """Ctrl-C during a stage printed a KeyboardInterrupt traceback. The stage here is a real
    process under run_stage, interrupted with SIGINT (what a terminal sends) while it writes."""
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "writer.py").write_text(STAGE)
    proc = subprocess.Popen(
        [sys.executable, "writer.py", *(["resumes"] if resumes else [])],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (130, f"stage writer: interrupted; rerun `dvc repro` to {then}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "writer.py"]  # no output, no temp file


def test_a_finished_stage_prints_and_records_its_wall_and_cpu_time(tmp_path):
    """The per-stage table of docs/performance.md reads .simgan/timings/<stage>.json; a stage that
    fails or is interrupted records nothing (the Ctrl-C test above finds no file)."""
    import json

    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "quick.py").write_text(
        "import sys\nfrom stages.common import run_stage\n\n"
        "if __name__ == '__main__':\n    run_stage(lambda argv: print('done', argv, flush=True))\n"
    )
    r = subprocess.run(
        [sys.executable, "quick.py", "gaze"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "done ['gaze']"
    assert re.fullmatch(r"stage quick@gaze: \d+\.\d s wall, \d+\.\d s CPU \(\d+\.\d\d cores busy\)", lines[-1]), lines
    record = json.loads((tmp_path / ".simgan" / "timings" / "quick@gaze.json").read_text())
    assert record["stage"] == "quick@gaze" and record["wall_s"] > 0 and record["cpu_s"] >= 0


def test_the_training_log_keeps_its_columns_and_adds_the_terms_an_option_logs():
    from stages.adversarial import LOG_COLUMNS, losses_csv

    plain = {"step": 10, "phase": "adversarial", "loss_refiner_adv": 0.5, "loss_disc": 0.25, "seconds": 1.5}
    assert losses_csv([plain]).splitlines()[0].split(",") == LOG_COLUMNS  # a default run's file as before
    nce = {**plain, "loss_refiner_nce": 3.25, "r1_penalty": 0.125}
    lines = losses_csv([plain, nce]).splitlines()
    header, row = lines[0], lines[2]
    assert header.split(",") == LOG_COLUMNS + ["loss_refiner_nce", "r1_penalty"]
    assert row.endswith(",3.25,0.125") and "1.5" not in row  # no wall-clock column


def test_a_step_count_reads_even_when_a_terminated_worker_left_its_lock_held():
    """Pool.terminate kills a worker wherever it is, inside StepCounter.add too; the stage must
    still get to report the other worker's error instead of hanging on the count."""
    import multiprocessing as mp
    import threading

    from simgan.parallel import StepCounter

    counter = StepCounter()
    counter.add(5)
    holder = mp.get_context("fork").Process(target=lambda: (counter._value.get_lock().acquire(), os._exit(0)))
    holder.start()
    holder.join()
    got = []
    reader = threading.Thread(target=lambda: got.append(counter.value), daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert got == [5]
