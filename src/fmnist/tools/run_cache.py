"""Sharing DVC's run-cache so that another machine restores a run instead of training again.

DVC's idiom is `dvc push --run-cache` here and `dvc pull --run-cache` + `dvc repro --pull` there. It falls short
for this pipeline: a run record lists every output, and DVC restores a run only when all of them are in the local
cache; `dvc push --run-cache` sends the records and the runs' cached outputs, but not the `cache: false` ones
(metrics and plots, which the run-cache saved in the local cache: DVC's Output.get_used_objs skips any output
without `use_cache`). So train and evaluate, whose metrics and plots stay in git, were never restored on another
machine: it trained again (tests/test_remote.py shows both). `push` below does DVC's push, then sends those
outputs too, read from the local run records with DVC's own classes (pinned in uv.lock). Nothing else is needed
on the other side: `dvc pull --run-cache` and `dvc repro --pull` then restore the runs.
"""

from pathlib import Path
from typing import Any

from dvc_data.hashfile.tree import Tree


def uncached_outputs(repo: Any) -> set[Any]:
    """The hashes (HashInfo) of the `cache: false` outputs of every run recorded in `repo`'s local run-cache."""
    # A run record does not say which outputs are `cache: false`: the pipeline does.
    uncached = {out.def_path for stage in repo.index.stages for out in stage.outs if not out.use_cache}
    cache = repo.stage_cache
    found = set()
    for entry in Path(cache.cache_dir).glob("*/*/*"):  # runs/<key[:2]>/<key>/<value>: one run each
        record = cache._load_cache(entry.parent.name, entry.name)  # DVC's reader of its own run records
        if record is None:
            continue
        outs = cache._create_stage(record).outs
        found |= {out.hash_info for out in outs if out.def_path in uncached and out.hash_info}
    # A directory's hash names its listing; the files in it travel separately (a push of the listing alone, as of
    # the metrics/train/plots directory, left them behind).
    for directory in [hash_info for hash_info in found if hash_info.isdir]:
        found |= {child for _, _, child in Tree.load(repo.cache.local, directory)}
    return found


def push(remote: str | None = None) -> int:
    """`dvc push --run-cache`, then the runs' `cache: false` outputs; how many files were sent in all."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        sent = repo.push(remote=remote, run_cache=True)
        transferred = repo.cloud.push(uncached_outputs(repo), remote=remote)
    return int(sent) + len(transferred.transferred)
