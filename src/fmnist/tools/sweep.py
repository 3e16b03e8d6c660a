"""Run a sweep of experiments across machines or CI runners, then collect them and choose on validation.

A sweep is a JSON list of `-S` override groups, one experiment each. Each worker runs its share of them as
DVC experiments and shares them through the git remote (each experiment's ref) and the DVC remote (its
outputs); a collector then pulls them all and ranks them by validation accuracy (metrics/val.json), never by
test accuracy: the test set judges the one chosen, once. Each candidate is compared with the best image by image
on the validation split (McNemar's test, the baseline's seed spread of validation accuracy in
metrics/seeds.json, the report's verdict rule): those "within noise" of the best are as good a choice as it.
Every machine starts from the same commit.

    fmnist sweep run --sets '[["train.learning_rate=0.005"], ["model.width=24"]]' --prefix lr --worker 1/2
    fmnist sweep run --sets '[["train.learning_rate=0.005"], ["model.width=24"]]' --prefix lr --worker 2/2
    fmnist sweep collect --prefix lr
"""

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.lib import answers, experiments, files, runs, stats
from fmnist.lib.dvc_cli import dvc
from fmnist.lib.params import flatten
from fmnist.lib.process import PipelineError

# Reads a file committed at a git revision: (revision, path) -> its text, or None.
ReadAt = Callable[[str, Path], str | None]


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


@dataclass(frozen=True)
class Candidate:
    """One experiment of the sweep, as the ranking sees it."""

    name: str
    rev: str  # its commit (refs/exps/...)
    changed: str  # the params it changed from the baseline, "k=v, ..."
    val_accuracy: float
    right: np.ndarray | None  # (6000,) bool: which validation images it gets right; None without its answers
    test_accuracy: float | None


def candidates(show: list[dict[str, Any]], prefix: str, read_at: ReadAt) -> list[Candidate]:
    """The sweep's experiments with their validation results, best first; one line if one has none."""
    base = flatten(experiments.baseline_params(show))
    found = []
    for name, (rev, data) in experiments.with_revs(show).items():
        if not name.startswith(f"{prefix}-"):
            continue
        params = flatten(data["params"]["params.yaml"]["data"])
        val = runs.val_accuracy(experiments.metrics_file(data, files.VAL_METRICS_FILE))
        if val is None:
            raise PipelineError(
                f"experiment {name} has no {files.VAL_METRICS_FILE} (validation metrics): it failed, or ran code "
                "older than the evaluate stage that writes them; rerun the sweep from this commit"
            )
        right = validation_right(name, rev, read_at)
        changed = ", ".join(f"{k}={v}" for k, v in params.items() if base.get(k, object()) != v) or "(none)"
        test = runs.test_accuracy(experiments.metrics_file(data, files.TEST_METRICS_FILE))
        found.append(Candidate(name, rev, changed, val, right, test))
    if not found:
        raise PipelineError(
            f"no experiments named {prefix}-N here; run `fmnist sweep collect` from the commit the sweep ran on"
        )
    return sorted(found, key=lambda c: (-c.val_accuracy, c.name))


def validation_right(name: str, rev: str, read_at: ReadAt) -> np.ndarray | None:
    """(N,) bool: which validation images experiment `name` (commit `rev`) gets right, from its answers
    (answers/val.csv, or an older commit's plots/val_confusion.csv); None where it has neither."""
    try:
        found = answers.read(lambda path: read_at(rev, path), "val")
    except ValueError as exc:
        raise PipelineError(f"experiment {name}: {exc}; rerun the sweep from this commit") from None
    return None if found is None else found.right


def against_best(best: Candidate, other: Candidate, seed_sd: float | None) -> str:
    """The report's verdict on `other` against `best`, image by image on the validation split."""
    if best.right is None or other.right is None:
        return f"no verdict (no {answers.SPLIT_FILES['val']})"
    counts = stats.paired(best.right, other.right)
    p_value = stats.mcnemar_p(counts.only_base, counts.only_head)
    return stats.verdict(counts.delta, p_value, seed_sd, best.val_accuracy).word


def ranking(show: list[dict[str, Any]], prefix: str, read_at: ReadAt) -> str:
    """A Markdown table of the sweep, best validation accuracy first, each candidate judged against the best."""
    found = candidates(show, prefix, read_at)
    seeds_record = runs.json_or_none(read_at(experiments.baseline_rev(show), files.SEEDS_FILE))
    spread = runs.seed_spread(seeds_record, "val_accuracy")
    seed_sd = spread.sd if spread is not None and len(spread.accuracies) > 1 else None
    best = found[0]
    lines = ["| rank | experiment | val accuracy | against the best | params changed |", "|---|---|---|---|---|"]
    for rank, candidate in enumerate(found, start=1):
        verdict = "best" if rank == 1 else against_best(best, candidate, seed_sd)
        lines.append(f"| {rank} | {candidate.name} | {candidate.val_accuracy:.4f} | {verdict} | {candidate.changed} |")
    noise = (
        f"validation seed spread ±{stats.seed_noise(seed_sd):.4f} from {files.SEEDS_FILE}"
        if seed_sd is not None
        else f"no validation seed spread in {files.SEEDS_FILE}: `fmnist seeds` records it"
    )
    test = "none recorded" if best.test_accuracy is None else f"{best.test_accuracy:.4f}"
    lines += [
        "",
        f"Chosen on validation: {best.name}; the others marked within noise are as good a choice ({noise}).",
        f"Its test accuracy, for the record and not to choose by: {test}.",
    ]
    return "\n".join(lines)


def collect(prefix: str, remote: str) -> str:
    """Pull the sweep's experiments of this commit from `remote` and rank them on validation."""
    listed = dvc("exp", "list", remote, "--name-only").stdout.split()
    names = [name for name in listed if name.startswith(f"{prefix}-")]
    if not names:
        raise PipelineError(
            f"{remote} has no experiments named {prefix}-N for this commit; check --prefix and "
            "that the workers have pushed"
        )
    dvc("exp", "pull", remote, *names, echo=True)
    return ranking(experiments.shown(), prefix, lambda rev, path: runs.committed_text(path, rev))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`fmnist sweep run ...` and `fmnist sweep collect ...`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="run this worker's share of the sweep and push it")
    collect_parser = actions.add_parser("collect", help="pull every worker's experiments and rank them on validation")
    for action in (run_parser, collect_parser):
        action.add_argument("--prefix", required=True, help="the sweep's name: experiments are PREFIX-1, PREFIX-2...")
        action.add_argument("--remote", default="origin", help="the git remote the experiments go through")
    run_parser.add_argument("--sets", required=True, help='JSON list of override lists: [["train.epochs=3"], ...]')
    run_parser.add_argument("--worker", default="1/1", help="K/N: this is worker K of N (default 1/1: all)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fmnist sweep`."""
    prefix = check_prefix(args.prefix)
    if args.action == "run":
        number, count = parse_worker(args.worker)
        names = run_share(parse_sets(args.sets), prefix, number, count, args.remote)
        print(f"sweep: ran and pushed {', '.join(names) or 'nothing (more workers than sets)'}")
    else:
        print(collect(prefix, args.remote))
    return 0
