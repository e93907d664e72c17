"""The pipeline graph as DVC sees it: read from dvc.yaml through DVC's own index, never restated.

`load_graph(repo)` asks `dvc.repo.Repo(repo).index.graph` (a networkx DiGraph whose edge
a -> b means stage a depends on an output of stage b) and keeps what the flow needs: the stage
names in an order where every stage comes after the stages it depends on, each stage's direct
upstream stages, and its declared outputs. DVC's status and dvc.lock are read here too.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class GraphError(RuntimeError):
    pass


@dataclass(frozen=True)
class Graph:
    order: tuple[str, ...]  # upstream stages first
    upstream: dict[str, frozenset[str]]  # stage -> stages whose outputs it reads
    outs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> output paths

    def select(self, patterns: list[str] | None) -> list[str]:
        """Stage names matching any fnmatch pattern (None: all), in run order; a pattern that
        matches nothing is an error, so a typo never silently runs less."""
        if not patterns:
            return list(self.order)
        for p in patterns:
            if not any(fnmatch.fnmatchcase(s, p) for s in self.order):
                raise GraphError(f"target {p!r}: matches no stage of dvc.yaml; stages: {', '.join(self.order)}")
        return [s for s in self.order if any(fnmatch.fnmatchcase(s, p) for p in patterns)]

    def with_upstream(self, stage: str) -> set[str]:
        """`stage` and every stage it depends on, directly or not."""
        if stage not in self.upstream:
            raise GraphError(f"stage {stage!r}: not in dvc.yaml; stages: {', '.join(self.order)}")
        seen, todo = set(), [stage]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(self.upstream[s])
        return seen

    def stale(self, selected: list[str], changed: set[str], force: bool) -> set[str]:
        """The selected stages that must go through `dvc repro`: those DVC reports changed, and
        every selected stage downstream of one of them (its inputs will change when that runs)."""
        if force:
            return set(selected)
        run: set[str] = set()
        chosen = set(selected)
        for s in self.order:  # upstream first, so one pass closes over the graph
            if s in chosen and (s in changed or self.upstream[s] & run):
                run.add(s)
        return run


def _stage_name(stage, root: str) -> str:
    rel = os.path.relpath(stage.dvcfile.path, root)
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def load_graph(repo: str | Path, status: bool = False) -> tuple[Graph, set[str]]:
    """The graph, and with `status` the names of the stages DVC finds changed (what
    `dvc status` lists: deps, outs, params or command), from one opening of the repo."""
    from dvc.repo import Repo  # ~1 s import: only where the graph is needed

    with Repo(str(repo)) as r:
        g = r.index.graph
        # DVC's own `addressing` is relative to the process's working directory; names here are
        # relative to the repository, as `dvc repro` run in its root spells them.
        name = {s: _stage_name(s, r.root_dir) for s in g.nodes}
        upstream = {name[s]: frozenset(name[d] for d in g.successors(s)) for s in g.nodes}
        outs = {name[s]: tuple(str(o.def_path) for o in s.outs) for s in g.nodes}
        by_address = {s.addressing: name[s] for s in g.nodes}
        changed = {by_address[a] for a in r.status() if a in by_address} if status else set()
    order: list[str] = []
    done: set[str] = set()

    # Kahn's order, ties broken by name, so runs list stages the same way every time.
    pending = dict(upstream)
    while pending:
        ready = sorted(s for s, ups in pending.items() if ups <= done)
        if not ready:
            raise GraphError(f"dvc.yaml: cycle among {sorted(pending)}")
        for s in ready:
            order.append(s)
            done.add(s)
            del pending[s]
    return Graph(tuple(order), upstream, outs), changed


def lock_outs(repo: str | Path) -> dict[str, dict[str, str]]:
    """{stage: {output path: hash}} as recorded in dvc.lock ({} without one). Parsed once per
    call: the lock of the whole pipeline takes ~0.1-0.3 s to parse."""
    lock = Path(repo) / "dvc.lock"
    if not lock.exists():
        return {}
    data = yaml.load(lock.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    return {
        stage: {o["path"]: o.get("md5") or o.get("hash") or "" for o in (entry or {}).get("outs", [])}
        for stage, entry in (data.get("stages") or {}).items()
    }
