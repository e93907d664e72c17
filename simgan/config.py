"""params.yaml: loading, typed access with errors that name the key, and profile overrides.

Stages read their section through `Params.get("gan.gaze.lr", float, check=positive)`, so a bad
value stops the stage before any output is touched, with one line naming the file, the key, what
was expected and what was found (issue 9)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from simgan.io import SimganError, write_text_atomic

_MISSING = object()


class ParamsError(SimganError):
    pass


def positive(v) -> str | None:
    return None if v > 0 and (not isinstance(v, float) or math.isfinite(v)) else "a finite number > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 and (not isinstance(v, float) or math.isfinite(v)) else "a finite number >= 0"


def percentage(v) -> str | None:
    return None if 0 <= v <= 100 else "a percentage in [0, 100]"


def bf16_setting(v) -> str | None:
    """A `bf16` key: true, false or "auto" (simgan.device.resolve_bf16: on where it is fast)."""
    return None if isinstance(v, bool) or v == "auto" else "true, false or 'auto'"


def one_of(*choices) -> Callable[[Any], str | None]:
    def check(v):
        return None if v in choices else f"one of {list(choices)}"

    return check


DEVICES = "'cpu', 'cuda', 'cuda:N' or 'auto'"


def device_param(p: "Params", key: str) -> str:
    """A device key ('auto': CUDA when present) -> the device it runs on, checked in the
    reading process so that a typo or a missing GPU is one error naming the key, not a worker's
    traceback."""
    from simgan.device import resolve_device  # torch: only the readers of a device key pay for it

    name = p.get(key, str, default="cpu")
    try:
        dev = resolve_device(name)
    except RuntimeError:  # torch.device could not parse it
        dev = None
    except ValueError as e:  # a device this machine does not have
        raise ParamsError(f"{p.path}: key '{key}': {str(e).removeprefix('device: ')}") from None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ParamsError(f"{p.path}: key '{key}': expected {DEVICES}, got {name!r}")
    return str(dev)


class Params:
    def __init__(self, data: dict, path: str | Path = "params.yaml"):
        self.data = data
        self.path = str(path)

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> "Params":
        path = Path(path)
        if not path.exists():
            raise ParamsError(f"{path}: file not found; expected the pipeline's params file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
        return cls(data, path)

    def raw(self, key: str, default=_MISSING):
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not _MISSING:
                    return default
                raise ParamsError(f"{self.path}: key '{key}': missing")
            node = node[part]
        return node

    def get(
        self, key: str, kind: type | tuple = object, check: Callable[[Any], str | None] | None = None, default=_MISSING
    ):
        value = self.raw(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not object and not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ParamsError(f"{self.path}: key '{key}': expected {names}, got {value!r}")
        if check is not None:
            expected = check(value)
            if expected:
                raise ParamsError(f"{self.path}: key '{key}': expected {expected}, got {value!r}")
        return value

    def section(self, key: str) -> dict:
        return copy.deepcopy(self.get(key, dict))


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# A profile's key spelled so stands for the task named by `--task` (profiles/quick.yaml: the
# sections gan.<task>, estimator.<task>, evaluate.<task> of a task whose name the user chose).
TASK_PLACEHOLDER = "<task>"
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # stages/common.py TASK_NAME: a stage suffix, a folder


def _placeholder_keys(node, prefix: str = "") -> list[str]:
    """The dotted keys of `node` whose last part is the placeholder, outermost first."""
    out = []
    for k, v in node.items() if isinstance(node, dict) else ():
        key = f"{prefix}{k}"
        if k == TASK_PLACEHOLDER:
            out.append(key)
        out.extend(_placeholder_keys(v, key + "."))
    return out


def resolve_task_profile(
    profile: dict, profile_path: str | Path, task: str | None, params: dict, params_path: str | Path
) -> dict:
    """`profile` with every `<task>` key renamed to `task`, checked against the params it will be
    applied to; a `<task>` section the params lack for that task (no estimator.<task>: a user who
    only refines) is left out, with a line on stderr. Every mistake is one ParamsError that names
    the file and the key: a `<task>` profile without --task, --task for a profile without `<task>`,
    a name that cannot be a task, a task params.yaml's `tasks` does not have."""
    keys = _placeholder_keys(profile)
    if task is None:
        if keys:
            raise ParamsError(
                f"{profile_path}: key '{keys[0]}': the profile is for a task you name; "
                f"expected --task NAME (a key of {params_path} 'tasks')"
            )
        return profile
    if not keys:
        raise ParamsError(
            f"{profile_path}: no '{TASK_PLACEHOLDER}' key for --task {task} to fill in; "
            f"expected a profile with sections like 'gan.{TASK_PLACEHOLDER}' (profiles/quick.yaml), or no --task"
        )
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
        raise ParamsError(
            f"--task {task!r} (for {profile_path}): expected a task name of letters, digits and _, starting with a letter"
        )
    tasks = params.get("tasks")
    if not isinstance(tasks, dict) or task not in tasks:
        known = sorted(tasks) if isinstance(tasks, dict) else []
        raise ParamsError(
            f"{params_path}: key 'tasks.{task}': missing (--task of {profile_path}); expected one of {known}, "
            f"or add the task first (docs/tutorial_custom_data.md, section 2)"
        )

    def rename(node, base, prefix: str):
        out = type(node)()  # a ruamel CommentedMap stays one, and keeps its flow or block style
        if hasattr(node, "fa") and node.fa.flow_style():
            out.fa.set_flow_style()
        for k, v in node.items():
            key = f"{prefix}{k}"
            name = task if k == TASK_PLACEHOLDER else k
            if k == TASK_PLACEHOLDER:
                if name in node:
                    raise ParamsError(
                        f"{profile_path}: key '{key}': sets the same section as '{prefix}{name}' for --task {task}"
                    )
                if not isinstance(base, dict) or not isinstance(base.get(name), dict):
                    print(
                        f"{profile_path}: key '{key}' left out: {params_path} has no section '{prefix}{name}'",
                        file=sys.stderr,
                    )
                    continue
            sub = base.get(name) if isinstance(base, dict) else None
            out[name] = rename(v, sub, key + ".") if isinstance(v, dict) else v
        return out

    return rename(profile, params, "")


def apply_profile(params_path: str | Path, profile_path: str | Path, task: str | None = None) -> dict:
    """Merge a profile's overrides into params.yaml (a mapping merges key by key, any other value
    replaces) and write it back atomically; returns the merged params. `task` fills in the
    profile's `<task>` keys (resolve_task_profile).

    The file is edited, not re-serialized: a ruamel.yaml round trip keeps every comment, the key
    order and each value's flow or block style, so `git diff` shows only the values the profile
    changed (PyYAML's dump dropped all comments of params.yaml)."""
    base = Params.load(params_path).data  # errors name the file, as every params reader's do
    profile = resolve_task_profile(Params.load(profile_path).data, profile_path, task, base, params_path)
    merged = deep_merge(base, profile)
    rt = _round_trip_yaml()
    original = Path(params_path).read_text()
    doc = rt.load(original)
    with contextlib.redirect_stderr(io.StringIO()):  # the left-out lines were printed just above
        rt_profile = resolve_task_profile(
            rt.load(Path(profile_path).read_text()), profile_path, task, base, params_path
        )
    _merge_in_place(doc, rt_profile)
    out = io.StringIO()
    rt.dump(doc, out)
    text = _keep_line_breaks(original, out.getvalue())
    if yaml.safe_load(text) != merged:  # never write a file that reads back as other values
        raise ParamsError(f"{params_path}: applying {profile_path} would not round-trip; file left unchanged")
    write_text_atomic(params_path, text)
    return merged


def _round_trip_yaml():
    from ruamel.yaml import YAML

    rt = YAML()  # round trip: comments, order, flow/block style and scalar spelling kept
    rt.width = 4096  # re-wrapping flow mappings would move untouched values to new lines
    rt.preserve_quotes = True
    # a null the merge writes (a profile's `key: null`) as `null`, not ruamel's bare `key:`
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def _merge_in_place(node, override) -> None:
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(node.get(k), dict):
            _merge_in_place(node[k], v)
        elif isinstance(v, list) and isinstance(node.get(k), list):
            node[k][:] = v  # the same sequence object keeps the comments attached to it
        else:
            node[k] = v


def _keep_line_breaks(original: str, dumped: str) -> str:
    """ruamel writes a flow mapping spread over several lines as one line; where that line's text
    is the original lines' joined, the original lines are put back."""
    lines = original.splitlines(keepends=True)
    joined = {}
    for i in range(len(lines)):
        text = lines[i].rstrip()
        for j in range(i + 1, min(i + 10, len(lines))):
            text = f"{text} {lines[j].strip()}"
            joined.setdefault(text, "".join(lines[i : j + 1]))
    return "".join(joined.get(line.rstrip(), line) for line in dumped.splitlines(keepends=True))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "params",
        help="switch profiles: apply a profile's overrides to params.yaml, or print them as `dvc exp run -S` arguments",
    )
    sub = p.add_subparsers(dest="params_command", required=True)
    a = sub.add_parser(
        "apply", help="merge PROFILE into params.yaml key by key, keeping its comments and key order (git restores it)"
    )
    task_help = f"the task a profile's '{TASK_PLACEHOLDER}' keys stand for (profiles/quick.yaml), a key of 'tasks'"
    a.add_argument("profile", help="profile YAML, e.g. profiles/tiny.yaml")
    a.add_argument("--params", default="params.yaml", help="the params file to rewrite (default: params.yaml)")
    a.add_argument("--task", help=task_help)
    a.set_defaults(func=lambda args: apply_profile(args.params, args.profile, args.task) and 0)
    o = sub.add_parser("overrides", help="print PROFILE as -S key=value arguments for `dvc exp run`")
    o.add_argument("profile", help="profile YAML, e.g. profiles/paper.yaml")
    o.add_argument("--params", default="params.yaml", help="the params file --task is checked against")
    o.add_argument("--task", help=task_help)

    def overrides(args) -> int:
        profile = Params.load(args.profile).data
        if args.task is not None or _placeholder_keys(profile):
            params = Params.load(args.params).data if args.task is not None else {}
            profile = resolve_task_profile(profile, args.profile, args.task, params, args.params)
        flat = flatten(profile)
        print(
            " ".join(
                f"-S '{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix(chr(10) + '...')}'"
                for k, v in flat.items()
            )
        )
        return 0

    o.set_defaults(func=overrides)


def seeds_param(p: Params) -> list[int]:
    """params.yaml's `seeds`: the distinct integer seeds of the whole-pipeline replicates (each its
    own GAN, refined set and estimators), which every comparison is repeated and paired over. A
    repeated seed would train the same replicate twice and report its std as if it were a spread
    over replicates; a seed is added to the base seeds of the GAN and the refinement, which numpy
    and torch take >= 0."""
    seeds = p.get("seeds", list)
    if len(seeds) < 1 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ParamsError(f"{p.path}: key 'seeds': expected a non-empty list of integers >= 0, got {seeds!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ParamsError(f"{p.path}: key 'seeds': expected distinct seeds, got {seeds!r} ({repeated[0]} repeated)")
    return seeds
