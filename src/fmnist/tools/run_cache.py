"""Sharing DVC's run-cache so that another machine restores a run instead of training again.

DVC's idiom is `dvc push --run-cache` here and `dvc pull --run-cache` + `dvc repro --pull` there. It falls short
for this pipeline: DVC restores a run only when every output in its record is in the cache, and `dvc push
--run-cache` sends the run records (.dvc/cache/runs) and the workspace's cached outputs, never a `cache: false`
one (metrics and plots, which stay in git and of which the run-cache keeps a copy in the local cache only). So
train and evaluate were never restored on another machine: it trained again (treeverse/dvc#5749;
tests/test_run_cache.py and tests/test_remote_servers.py show it; docs/remotes.md).

`push` below does DVC's push, then sends those outputs with DVC's documented means only: a run record is one
stage's entry in dvc.lock's format, whose `outs` entries are also the `outs` of a .dvc file, so a temporary .dvc
file that lists the runs' `cache: false` outputs, each under a name of its own, is pushed like any other target.
Nothing else is needed on the other side: `dvc pull --run-cache` and `dvc repro --pull` then restore the runs.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

OUTPUT_FIELDS = ("outs", "metrics", "plots")  # where dvc.yaml declares a stage's outputs


def uncached_paths(dvc_yaml: Path) -> set[str]:
    """The outputs that dvc.yaml declares `cache: false`, as its stages write them (`metrics/val.json`)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    paths = set()
    for stage in stages.values():
        for field in OUTPUT_FIELDS:
            for entry in stage.get(field) or []:
                if isinstance(entry, dict):  # `- path: {cache: false, ...}`; a bare path is cached
                    paths |= {path for path, options in entry.items() if (options or {}).get("cache") is False}
    return paths


def run_records(runs: Path) -> Iterator[dict[str, Any]]:
    """Every run record in the run-cache directory `runs` (runs/<key[:2]>/<key>/<value>), as dvc.lock entries."""
    for path in sorted(runs.glob("*/*/*")):
        try:
            record = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):  # half-written by a DVC still running, or damaged: DVC skips it too
            continue
        if isinstance(record, dict):
            yield record


def uncached_outputs(dvc_yaml: Path, runs: Path) -> list[dict[str, Any]]:
    """The `outs` entries (path, hash, md5, ...) of the recorded runs' `cache: false` outputs, one per object."""
    uncached = uncached_paths(dvc_yaml)
    found: dict[str, dict[str, Any]] = {}
    for record in run_records(runs):
        for out in record.get("outs") or []:
            if isinstance(out, dict) and out.get("path") in uncached and out.get("md5"):
                found.setdefault(str(out["md5"]), out)
    return [found[md5] for md5 in sorted(found)]


def dvc_file(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A .dvc file that tracks `outputs` under their md5s as paths: unique, and no other output's path."""
    return {"outs": [{**out, "path": str(out["md5"])} for out in outputs]}


def push(remote: str | None = None) -> int:
    """`dvc push --run-cache`, then the runs' `cache: false` outputs; how many files were sent in all."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        root = Path(repo.root_dir)
        # DVC's cache directory: `cache.dir` in any config file (DVC reads it as an absolute path), or .dvc/cache
        runs = Path(repo.config["cache"].get("dir") or root / ".dvc" / "cache") / "runs"
        sent = int(repo.push(remote=remote, run_cache=True))
    outputs = uncached_outputs(root / "dvc.yaml", runs)
    if not outputs:
        return sent
    # In the workspace (DVC takes targets from there, and never from .dvc/), gone when the push ends or fails
    with tempfile.TemporaryDirectory(prefix=".fmnist-run-outputs-", dir=root) as folder:
        target = Path(folder) / "outputs.dvc"
        target.write_text(yaml.safe_dump(dvc_file(outputs), sort_keys=False))
        with Repo(".") as repo:  # a new index, which includes the .dvc file
            sent += int(repo.push(targets=[str(target)], remote=remote))
    return sent
