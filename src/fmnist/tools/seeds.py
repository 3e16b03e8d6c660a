"""`fmnist seeds`: the current params trained with several seeds, as DVC experiments, and their spread recorded.

    fmnist seeds [--n 5]

Runs `dvc exp run --temp --force --single-item -S train.seed=K train calibrate evaluate` for K = 0 .. n-1, each a
DVC experiment named seed<K>-<fingerprint> (a second call reuses the runs that the first one finished), then
writes metrics/seeds.json: every seed's validation and test accuracy and per-class test recall, its test figures
of calibration and unsure answers (ECE, loss, coverage, accuracy of the sure answers, photo-like garments answered
sure, the worst not-garment set's AUROC, and each set's AUROC and share answered unsure as the report computes
them), their means and standard deviations, where they ran, and the fingerprint of the code and params they
measured (fmnist.lib.runs.fingerprint). Commit it: the report reads it at the base of a pull request to tell a
real change from a change of seed, and `fmnist sweep collect` its validation spread. To spread the runs over
machines, run the same overrides with `fmnist sweep` instead.
"""

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.lib import answers, experiments, files, runs, sides
from fmnist.lib.dvc_cli import dvc
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.process import PipelineError
from fmnist.lib.runs import SEED_RECORD_STAGES

MIN_SEEDS = 2  # a standard deviation needs two
# Each run's test figures of calibration and unsure answers, as metrics/test.json names them: the spreads the
# report's calibration section reads.
FIGURES = ("ece", "loss", "coverage", "sure_accuracy", "photo_sure", "worst_auroc")


def experiment_name(seed: int, fingerprint: str) -> str:
    """The experiment that measures `seed` for the code and params of `fingerprint`."""
    return f"seed{seed}-{fingerprint[:8]}"


def metrics_of(data: dict[str, Any], read: Callable[[Path], str | None]) -> dict[str, Any]:
    """An experiment's validation and test accuracy, per-class recall, environment (its `dvc exp show --json`
    data) and figures of calibration and unsure answers (with `read`, a file's text at its commit; figures it
    lacks, as a run of older code would, are left out)."""
    accuracy = runs.test_accuracy(experiments.metrics_file(data, files.TEST_METRICS_FILE))
    val_accuracy = runs.val_accuracy(experiments.metrics_file(data, files.VAL_METRICS_FILE))
    if accuracy is None or val_accuracy is None:
        raise PipelineError(
            f"an experiment has no {files.TEST_METRICS_FILE} or {files.VAL_METRICS_FILE}; run `dvc exp show` "
            "to see which"
        )
    return {
        "val_accuracy": val_accuracy,
        "accuracy": accuracy,
        "recall": class_recall(read),
        "environment": runs.environment_of(runs.json_or_none(read(files.TRAIN_METRICS_FILE))),
        **unsure_figures(data, read),
    }


def class_recall(read: Callable[[Path], str | None]) -> dict[str, float]:
    """{class: test recall} of an experiment, from its answers (`read`: a file's text at its commit); {} without."""
    try:
        test = answers.read(read, "test")
    except ValueError:
        return {}
    if test is None:
        return {}
    return {
        name: float(test.right[test.actual == i].mean())
        for i, name in enumerate(CLASS_NAMES)
        if np.any(test.actual == i)
    }


def unsure_figures(data: dict[str, Any], read: Callable[[Path], str | None]) -> dict[str, Any]:
    """{ece, loss, coverage, sure_accuracy, photo_sure, worst_auroc, not_garments: {set: {auroc, unsure}}} of an
    experiment: its metrics files' figures, and each set's computed from its answers as the report computes them."""
    test = runs.split_figures(experiments.metrics_file(data, files.TEST_METRICS_FILE), "test")
    found = {key: test[key] for key in FIGURES if runs.number(test.get(key)) is not None}
    try:
        test_answers = answers.read(read, "test")
        unsure = sides.read_unsure(read, test_answers) if test_answers is not None else None
    except ValueError as exc:
        raise PipelineError(
            f"an experiment's answers cannot be read ({exc}); run `dvc exp show` to see which"
        ) from None
    if test_answers is not None and unsure is not None and unsure.not_garments:
        found["not_garments"] = sides.set_values(test_answers, unsure)
    return found


def spread_of(results: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """{mean, sd} of one figure over the runs' `results` (metrics_of's), None unless every run records it."""
    values = [result[key] for result in results if key in result]
    if len(values) < len(results) or len(values) < MIN_SEEDS:
        return None
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values)}


def record(results: dict[int, dict[str, Any]], names: dict[int, str], fingerprint: str, commit: str) -> dict[str, Any]:
    """The contents of metrics/seeds.json for the runs of `results` ({seed: metrics_of(...)})."""
    ordered = [results[seed] for seed in sorted(results)]
    accuracies = [result["accuracy"] for result in ordered]
    val_accuracies = [result["val_accuracy"] for result in ordered]
    environments = [result["environment"] for result in ordered]
    return {
        "seeds": {
            "n": len(accuracies),
            "mean": statistics.mean(accuracies),
            "sd": statistics.stdev(accuracies),
            "min": min(accuracies),
            "max": max(accuracies),
            "val_mean": statistics.mean(val_accuracies),
            "val_sd": statistics.stdev(val_accuracies),
            "runs": [
                {
                    "seed": seed,
                    "experiment": names[seed],
                    "val_accuracy": results[seed]["val_accuracy"],
                    "accuracy": results[seed]["accuracy"],
                    "recall": results[seed]["recall"],
                    **{key: results[seed][key] for key in (*FIGURES, "not_garments") if key in results[seed]},
                }
                for seed in sorted(results)
            ],
            # Mean and sd of each figure of calibration and unsure answers that every run records.
            "figures": {key: found for key in FIGURES if (found := spread_of(ordered, key)) is not None},
            # One environment if every run had the same, else the first and a note: the spread then mixes in machines.
            "environment": environments[0] if all(e == environments[0] for e in environments) else "mixed",
            "fingerprint": fingerprint,
            "commit": commit,
        }
    }


def finished_experiments() -> dict[str, tuple[str, dict[str, Any]]]:
    """{name: (commit, data)} of the experiments on every commit: a run of the same fingerprint counts whichever
    commit it started from (commits that changed none of SEED_RECORD_STAGES keep the fingerprint)."""
    return experiments.with_revs(experiments.shown("--all-commits"))


def run_seeds(count: int) -> dict[str, Any]:
    """Run the missing seed experiments of the current code and params, then build their record."""
    if count < MIN_SEEDS:
        raise PipelineError(f"--n must be at least {MIN_SEEDS}: a spread needs two runs")
    if not files.DVC_LOCK_FILE.is_file():
        raise PipelineError(f"{files.DVC_LOCK_FILE} is missing; run `dvc repro` first, then `fmnist seeds`")
    fingerprint = runs.fingerprint(files.DVC_LOCK_FILE.read_text())
    if fingerprint is None:
        raise PipelineError(
            f"{files.DVC_LOCK_FILE} lacks one of the stages {', '.join(SEED_RECORD_STAGES)}; run `dvc repro` first"
        )
    # The fingerprint names dvc.lock's code and params: the experiments must run exactly those.
    if stale := json.loads(dvc("status", "--json", *SEED_RECORD_STAGES).stdout or "{}"):
        raise PipelineError(
            f"`dvc status` says {', '.join(sorted(stale))} changed since {files.DVC_LOCK_FILE}; run `dvc repro` (or "
            "`dvc pull`) first, so that the record measures the code and params here"
        )
    names = {seed: experiment_name(seed, fingerprint) for seed in range(count)}
    done = finished_experiments()
    for seed, name in names.items():
        if name in done:
            print(f"seeds: {name} ran before, reusing it", flush=True)
            continue
        print(f"seeds: running {name} (train.seed={seed})", flush=True)
        overrides = ["--set-param", f"train.seed={seed}"]
        # --force: trained here, not restored from DVC's run cache (another machine's run); --single-item: only
        # SEED_RECORD_STAGES, in that order, on the data the workspace's dvc.lock names.
        dvc(
            "exp",
            "run",
            "--temp",
            "--force",
            "--single-item",
            "--name",
            name,
            *overrides,
            *SEED_RECORD_STAGES,
            echo=True,
        )
    done = finished_experiments()
    missing = [name for name in names.values() if name not in done]
    if missing:
        raise PipelineError(f"DVC shows no experiments named {', '.join(missing)}; see `dvc exp show`")
    results = {seed: metrics_of(done[name][1], committed_at(done[name][0])) for seed, name in names.items()}
    return record(results, names, fingerprint, runs.workspace_commit() or "unknown")


def committed_at(rev: str) -> Callable[[Path], str | None]:
    """A reader of the files committed at `rev` (an experiment's commit holds its answers/, cache: false)."""
    return lambda path: runs.committed_text(path, rev)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fmnist seeds`."""
    parser.add_argument("--n", type=int, default=5, help="how many seeds, 0 .. n-1 (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fmnist seeds`."""
    found = run_seeds(args.n)["seeds"]
    files.write_json(files.SEEDS_FILE, {"seeds": found})
    print(
        f"seeds: validation accuracy {found['val_mean']:.4f} ± {found['val_sd']:.4f}, test accuracy "
        f"{found['mean']:.4f} ± {found['sd']:.4f} over {found['n']} seeds ({found['min']:.4f} to {found['max']:.4f}) "
        f"-> {files.SEEDS_FILE}"
    )
    return 0
