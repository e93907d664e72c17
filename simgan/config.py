"""params.yaml: loading, typed access with errors that name the key, and profile overrides.

Stages read their section through `Params.get("gan.gaze.lr", float, check=positive)`, so a bad
value stops the stage before any output is touched, with one line naming the file, the key, what
was expected and what was found (issue 9)."""

from __future__ import annotations

import copy
import math
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


def bf16_setting(v) -> str | None:
    """A `bf16` key: true, false or "auto" (simgan.device.resolve_bf16: on where it is fast)."""
    return None if isinstance(v, bool) or v == "auto" else "true, false or 'auto'"


def one_of(*choices) -> Callable[[Any], str | None]:
    def check(v):
        return None if v in choices else f"one of {list(choices)}"

    return check


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

    def get(self, key: str, kind: type | tuple = object, check: Callable[[Any], str | None] | None = None, default=_MISSING):
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


def apply_profile(params_path: str | Path, profile_path: str | Path) -> dict:
    """Overwrite params.yaml with itself deep-merged with a profile's overrides (atomically)."""
    base = Params.load(params_path).data
    profile = Params.load(profile_path).data
    merged = deep_merge(base, profile)
    write_text_atomic(params_path, yaml.safe_dump(merged, sort_keys=False, default_flow_style=None, width=110))
    return merged


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
    p = subparsers.add_parser("params", help="switch profiles: apply a profile's overrides to params.yaml, or print them as `dvc exp run -S` arguments")
    sub = p.add_subparsers(dest="params_command", required=True)
    a = sub.add_parser("apply", help="deep-merge PROFILE into params.yaml (rewrites the file; git restores it)")
    a.add_argument("profile")
    a.add_argument("--params", default="params.yaml")
    a.set_defaults(func=lambda args: apply_profile(args.params, args.profile) and 0)
    o = sub.add_parser("overrides", help="print PROFILE as -S key=value arguments for `dvc exp run`")
    o.add_argument("profile")

    def overrides(args) -> int:
        flat = flatten(Params.load(args.profile).data)
        print(" ".join(f"-S '{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix(chr(10) + '...')}'" for k, v in flat.items()))
        return 0

    o.set_defaults(func=overrides)
