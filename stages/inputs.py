"""Stage `inputs@<task>`: data/<task>/inputs/, one symlink per raw input of the selected
`data.<task>.source` (stages/prepare.py SOURCE_INPUTS says which), so that prepare@<task>
depends on the raw files themselves: a changed label table or a deleted image shows prepare as
changed in `dvc status`, and `dvc repro` reruns it. The embedded source has no raw inputs: its
slots are empty folders. Output: data/<task>/inputs.json, the source and the path of each slot."""

from __future__ import annotations

from simgan.config import ParamsError
from stages.common import TASK_ARG, Params, check_task, run_stage
from stages.prepare import inputs_dir, link_inputs


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ParamsError(f"usage: python -m stages.inputs {TASK_ARG}")
    p = Params.load()
    task = check_task(argv[0], p)
    manifest = link_inputs(task, p)
    linked = {slot: path for slot, path in manifest["inputs"].items() if path is not None}
    print(
        f"inputs {task}: source {manifest['source']}; "
        + (", ".join(f"{inputs_dir(task)}/{s} -> {v}" for s, v in linked.items()) or "no raw inputs"),
        flush=True,
    )


if __name__ == "__main__":
    run_stage(main)
