"""Run a sweep of experiments across machines or CI runners, then collect and rank them.

A sweep is a JSON list of `-S` override groups, one experiment each. Each worker runs its share of them as
DVC experiments and shares them through the git remote (each experiment's ref) and the DVC remote (its
outputs); a collector then pulls them all and ranks them. Every machine starts from the same commit.

    fmnist sweep run --sets '[["train.learning_rate=0.005"], ["model.width=24"]]' --prefix lr --worker 1/2
    fmnist sweep run --sets '[["train.learning_rate=0.005"], ["model.width=24"]]' --prefix lr --worker 2/2
    fmnist sweep collect --prefix lr
"""

import argparse
import json
import re
from pathlib import Path
from typing import Any

from fmnist.lib import files
from fmnist.lib.dvc_cli import dvc
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import flatten

DEFAULT_METRIC = "test.accuracy"  # metrics/test.json; higher is better
METRICS_FILE = files.TEST_METRICS_FILE.as_posix()


def parse_sets(text: str) -> list[list[str]]:
    """The sweep: a JSON list of lists of "section.key=value" overrides."""
    example = '[["train.learning_rate=0.005"], ["model.width=24", "train.epochs=20"]]'
    try:
        sets = json.loads(text)
    except ValueError as exc:
        raise PipelineError(f"--sets is not JSON ({exc}); give a list of override lists such as {example}") from None
    valid = (
        isinstance(sets, list)
        and sets
        and all(
            isinstance(group, list) and group and all(isinstance(o, str) and "=" in o for o in group) for group in sets
        )
    )
    if not valid:
        raise PipelineError(
            f"--sets must be a non-empty list of non-empty lists of key=value strings, such as {example}; got {text}"
        )
    return sets


def parse_worker(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N): this machine is worker K (from 1) of N."""
    try:
        number, count = (int(part) for part in text.split("/"))
    except ValueError:
        number, count = 0, 0
    if not 1 <= number <= count:
        raise PipelineError(f"--worker must be K/N with 1 <= K <= N, such as 2/3; got {text}")
    return number, count


def check_prefix(prefix: str) -> str:
    """The sweep's name, if it can start experiment names (git ref names): letters, digits, '.', '_', '-'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix) or ".." in prefix:
        raise PipelineError(f"--prefix {prefix!r} cannot name experiments; use letters, digits, '.', '_' and '-'")
    return prefix


def experiment_name(prefix: str, index: int) -> str:
    """The name of the sweep's experiment `index` (from 0): prefix-1, prefix-2, ..."""
    return f"{prefix}-{index + 1}"


def share(sets: list[list[str]], number: int, count: int) -> list[int]:
    """The indices of the sets that worker `number` of `count` runs: every count-th, starting at its own."""
    return list(range(number - 1, len(sets), count))


def run_share(sets: list[list[str]], prefix: str, number: int, count: int, remote: str) -> list[str]:
    """Restore the pipeline's inputs, run this worker's experiments and push each one; their names."""
    dvc("pull", echo=True)  # the commit's outputs: experiments then rerun only the stages their overrides change
    names = []
    for index in share(sets, number, count):
        name = experiment_name(prefix, index)
        # --temp: in a scratch copy of the commit, so each experiment starts from the committed params, not
        # from the previous one's, and the workspace stays as it was.
        dvc("exp", "run", "--temp", "--name", name, *(f for o in sets[index] for f in ("--set-param", o)), echo=True)
        dvc("exp", "push", remote, name, echo=True)  # its git ref, and its outputs to the default DVC remote
        names.append(name)
    return names


def experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{name: data} of every experiment in `dvc exp show --json` output (baselines and workspace left out)."""
    found = {}
    for baseline in show:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                found[rev["name"]] = rev["data"]
    return found


def metrics_file(data: dict[str, Any], path: Path) -> Any:
    """The parsed contents of metrics file `path` in an experiment's `dvc exp show --json` data, None if absent."""
    return ((data.get("metrics") or {}).get(path.as_posix()) or {}).get("data")


def baseline_params(show: list[dict[str, Any]]) -> dict[str, Any]:
    """The params.yaml values of the commit the experiments started from (the first baseline)."""
    baselines = [b for b in show if b.get("rev") != "workspace"]
    return baselines[0]["data"]["params"]["params.yaml"]["data"] if baselines else {}


def metric_value(data: dict[str, Any], metric: str) -> float | None:
    """`metric` ("test.accuracy") from an experiment's metrics/test.json, None if it has none."""
    value: Any = metrics_file(data, files.TEST_METRICS_FILE)
    for key in metric.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ranking(show: list[dict[str, Any]], prefix: str, metric: str = DEFAULT_METRIC) -> str:
    """A Markdown table of the sweep's experiments, best `metric` first, with the params each one changed."""
    base = flatten(baseline_params(show))
    rows = []
    for name, data in experiments(show).items():
        if not name.startswith(f"{prefix}-"):
            continue
        params = flatten(data["params"]["params.yaml"]["data"])
        changed = ", ".join(f"{k}={v}" for k, v in params.items() if base.get(k, object()) != v) or "(none)"
        rows.append((metric_value(data, metric), name, changed))
    if not rows:
        raise PipelineError(
            f"no experiments named {prefix}-N here; run `fmnist sweep collect` from the commit the sweep ran on"
        )
    rows.sort(key=lambda row: (row[0] is None, -(row[0] or 0.0), row[1]))
    lines = [f"| rank | experiment | {metric} | params changed |", "|---|---|---|---|"]
    for rank, (value, name, changed) in enumerate(rows, start=1):
        shown = "missing" if value is None else f"{value:.4f}"
        lines.append(f"| {rank} | {name} | {shown} | {changed} |")
    return "\n".join(lines)


def collect(prefix: str, remote: str, metric: str) -> str:
    """Pull the sweep's experiments of this commit from `remote` and rank them."""
    listed = dvc("exp", "list", remote, "--name-only").stdout.split()
    names = [name for name in listed if name.startswith(f"{prefix}-")]
    if not names:
        raise PipelineError(
            f"{remote} has no experiments named {prefix}-N for this commit; check --prefix and "
            "that the workers have pushed"
        )
    dvc("exp", "pull", remote, *names, echo=True)
    return ranking(json.loads(dvc("exp", "show", "--json").stdout), prefix, metric)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`fmnist sweep run ...` and `fmnist sweep collect ...`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="run this worker's share of the sweep and push it")
    run_parser.add_argument("--sets", required=True, help='JSON list of override lists: [["train.epochs=3"], ...]')
    run_parser.add_argument("--worker", default="1/1", help="K/N: this is worker K of N (default 1/1: all)")
    collect_parser = actions.add_parser("collect", help="pull every worker's experiments and rank them")
    collect_parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"key in {METRICS_FILE} to rank by")
    for action in (run_parser, collect_parser):
        action.add_argument("--prefix", required=True, help="the sweep's name: experiments are PREFIX-1, PREFIX-2...")
        action.add_argument("--remote", default="origin", help="the git remote the experiments go through")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fmnist sweep`."""
    prefix = check_prefix(args.prefix)
    if args.action == "run":
        number, count = parse_worker(args.worker)
        names = run_share(parse_sets(args.sets), prefix, number, count, args.remote)
        print(f"sweep: ran and pushed {', '.join(names) or 'nothing (more workers than sets)'}")
    else:
        print(collect(prefix, args.remote, args.metric))
    return 0
