"""DVC experiments as `dvc exp show --json` lists them: each experiment's commit and data, a metrics file of one,
and the commit they started from. What `fmnist seeds` and `fmnist sweep` read their runs through."""

import json
from pathlib import Path
from typing import Any

from fmnist.lib.dvc_cli import dvc


def shown(*options: str) -> list[dict[str, Any]]:
    """The parsed output of `dvc exp show --json OPTIONS` in this repository."""
    return json.loads(dvc("exp", "show", "--json", *options).stdout)


def with_revs(show: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """{name: (commit, data)} of every experiment in `dvc exp show --json` output (baselines, workspace left out)."""
    found = {}
    for baseline_entry in show:
        for experiment in baseline_entry.get("experiments") or []:
            for rev in experiment["revs"]:
                found[rev["name"]] = (rev["rev"], rev["data"])
    return found


def metrics_file(data: dict[str, Any], path: Path) -> Any:
    """The parsed contents of metrics file `path` in an experiment's `dvc exp show --json` data, None if absent."""
    return ((data.get("metrics") or {}).get(path.as_posix()) or {}).get("data")


def baseline(show: list[dict[str, Any]]) -> dict[str, Any]:
    """The commit the experiments started from (the first baseline) in `dvc exp show --json` output; {} if none."""
    return next((b for b in show if b.get("rev") != "workspace"), {})


def baseline_params(show: list[dict[str, Any]]) -> dict[str, Any]:
    """The params.yaml values of the commit the experiments started from."""
    found = baseline(show)
    return found["data"]["params"]["params.yaml"]["data"] if found else {}


def baseline_rev(show: list[dict[str, Any]]) -> str:
    """The commit the experiments started from ("HEAD" if the listing has none)."""
    return str(baseline(show).get("rev") or "HEAD")
