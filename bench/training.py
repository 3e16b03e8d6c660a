"""Training recipes on the real data, side by side: the reference script and presets of this pipeline.

    python -m bench.training [--presets reference,default,fast] [--seeds 0,1,2] [--split test|val] [--no-reference]
                             [--isa AVX2] [--out bench.md] [--plot frontier.png]

Run from the repository root; needs data/raw and data/prepared (`dvc repro prepare`). The bench compares training
recipes with the reference script (bench/reference.py: the plain Keras script this project started from), which
only trains and tests. So each preset runs the real `train` stage command, in a fresh process as `dvc repro` runs
it, in a scratch directory holding params.yaml with the preset (and train.seed) laid over it; then this process
predicts the split with the model it wrote as the `evaluate` stage predicts (the same Predictor and `inference`
params, test-time augmentation included) but without the calibration, which changes no image's most probable
class: the accuracy is the one `evaluate` reports. The table's time is the train command's plus that prediction's,
from loading the split and the model to the accuracy, with TensorFlow already loaded here (the train stage and the
script each pay for its import once). The calibrate and evaluate stages do not run: what they add (the
calibration, the images that are not garments, the photos) is no part of what a recipe costs to reach its
accuracy. Every row runs once per seed, in interleaved rounds (round k trains every row with seed k, so a slow
spell of the machine hits all rows alike), and the table gives each row's mean ± standard deviation over the
seeds: the accuracy differs by seed, the time by the machine's mood. Run it on an idle machine: the figures are
wall-clock seconds, and only the ratios to the first row compare across machines.

--split val reports accuracy on the validation split (for tuning: the test set is for the candidates you keep),
and hides what the reference script prints about the test set.
--isa AVX2 runs every row, the reference script and the predictions included, with ONEDNN_MAX_CPU_ISA=AVX2: oneDNN
as on the common CPUs without AVX512 (most laptops, many cloud VMs and CI runners), whatever this machine has. A
preset with `train.distribute: multi_worker` (presets/two-workers.yaml) trains with two worker processes on this
machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench import cli
from fmnist.apps.model_choice import load_predictor, without_calibration
from fmnist.lib import files, plots, process, runs
from fmnist.lib.files import load_split
from fmnist.lib.params import load_params, parse_params
from fmnist.lib.presets import deep_merge, load_preset
from fmnist.lib.process import PipelineError, local_cluster

SPLITS = ("test", "val")
REPO_ROOT = Path(__file__).resolve().parents[1]  # where `python -m bench.reference` finds the bench package
# Test accuracies reported for Fashion-MNIST elsewhere, drawn beside the measured rows by --plot. fastai's course
# (course22p2, 14_augment: a ResNet with one-cycle AdamW, batch 1024; tuned on the test split there) and the
# dataset's own benchmark table (small CNNs: 0.925-0.939).
ANCHORS = (
    ("ResNet, 5 epochs (fastai)", 0.934),
    ("ResNet, 20 epochs, crop + flip, flip TTA (fastai)", 0.945),
    ("ResNet, 50 epochs, random erasing (fastai)", 0.949),
    ("small CNNs, best in the dataset's table", 0.939),
)


@dataclass(frozen=True)
class Result:
    """One training run of one row."""

    name: str
    seed: int
    accuracy: float | None  # on the chosen split; None where the row cannot say (the reference script on val)
    train_seconds: float
    predict_seconds: float  # predicting the split (the reference script's is inside its train_seconds)
    parameters: int
    epochs: int
    compute: str  # where it trained and in which precision, e.g. "CPU eigen, float32"

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.predict_seconds


def timed(args: list[str], cwd: Path, env: dict[str, str], echo: bool = True) -> tuple[float, str]:
    """Run a command with `env` added (its stdout copied to our stderr if `echo`); return (wall seconds, stdout)."""
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if echo:
        sys.stderr.write(result.stdout)
    if result.returncode != 0:
        raise PipelineError(f"`{' '.join(args)}` failed in {cwd} (exit {result.returncode})")
    return seconds, result.stdout


def scratch_workspace(root: Path, params: dict[str, Any]) -> Path:
    """A directory where the stages see this repository's data and `params` as params.yaml."""
    (root / "data").mkdir(parents=True)
    for data_dir in (files.RAW_DIR, files.PREPARED_DIR):
        (root / data_dir).symlink_to(data_dir.resolve(), target_is_directory=True)
    (root / files.PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def timed_local_workers(chief: Path, worker: Path, env: dict[str, str]) -> float:
    """Train with two multi_worker processes on this machine; the chief's wall time (both end together)."""
    configs = [{**env, "TF_CONFIG": json.dumps(config)} for config in local_cluster(2)]
    other = subprocess.Popen(
        [sys.executable, "-m", "fmnist.stages", "train"],
        cwd=worker,
        env={**os.environ, **configs[1]},
        stdout=subprocess.DEVNULL,
    )
    try:
        seconds, _ = timed([sys.executable, "-m", "fmnist.stages", "train"], chief, configs[0])
    finally:
        other.wait()  # it ends with the chief: on success, or when the chief's failure breaks its all-reduce
    if other.returncode != 0:
        raise PipelineError(f"the second worker failed in {worker} (exit {other.returncode})")
    return seconds


def epochs_run(workspace: Path) -> int:
    """Epochs the train stage ran (early stopping may end sooner): dvclive's last step, counted from 0."""
    return int(json.loads((workspace / files.TRAIN_METRICS_FILE).read_text())["step"]) + 1


def predicted(workspace: Path, split: str) -> tuple[float, int, float]:
    """(accuracy on `split`, parameters, seconds) of the model the workspace trained, predicted in this process as
    `evaluate` predicts it, without the calibration (which changes no image's most probable class). The seconds run
    from loading the split and the model to the accuracy; TensorFlow is loaded before they start."""
    process.load_tensorflow()
    start = time.perf_counter()
    data = load_split(split, workspace / files.PREPARED_DIR)
    inference = load_params(workspace / files.PARAMS_FILE).inference
    predict = load_predictor(without_calibration(workspace / files.MODEL_FILE, inference))
    accuracy = float(np.mean(predict(data.images).probabilities.argmax(axis=1) == data.labels))
    return accuracy, predict.model.count_params(), time.perf_counter() - start


def run_preset(name: str, params: dict[str, Any], seed: int, split: str, root: Path, env: dict[str, str]) -> Result:
    """Train with `params` and `seed` through the train stage's command, then predict `split`; time both."""
    params = deep_merge(params, {"train": {"seed": seed}})
    parse_params(params)  # a preset with a wrong key fails here, not after the other rows ran
    workspace = scratch_workspace(root / f"{name}-{seed}", params)
    if params["train"]["distribute"] == "multi_worker":
        train_seconds = timed_local_workers(workspace, scratch_workspace(root / f"{name}-{seed}-worker", params), env)
    else:
        train_seconds, _ = timed([sys.executable, "-m", "fmnist.stages", "train"], workspace, env)
    accuracy, parameters, predict_seconds = predicted(workspace, split)
    recorded = runs.environment_of(json.loads((workspace / files.TRAIN_METRICS_FILE).read_text())) or {}
    compute = f"{recorded.get('device', '?')} {recorded.get('kernels', '')}, {recorded.get('precision', '?')}"
    return Result(name, seed, accuracy, train_seconds, predict_seconds, parameters, epochs_run(workspace), compute)


def run_reference(seed: int, split: str, root: Path, params: dict[str, Any], env: dict[str, str]) -> Result:
    """The reference script, as one process: its fit and its test are both in the measured time."""
    workspace = scratch_workspace(root / f"reference-{seed}", params)  # the script reads data/raw only
    script = [sys.executable, "-m", "bench.reference", "--seed", str(seed)]
    importable = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    # Its report, the last line, holds the test accuracy: shown only with --split test.
    seconds, stdout = timed(script, workspace, {**env, **importable}, echo=split == "test")
    report = json.loads(stdout.strip().splitlines()[-1])
    accuracy = report["test_accuracy"] if split == "test" else None  # its validation split is not ours
    return Result(
        "reference script (plain Keras)",
        seed,
        accuracy,
        seconds,
        0.0,
        report["parameters"],
        report["epochs"],
        f"{report['device']}, float32",
    )


def run_round(
    seed: int,
    base: dict[str, Any],
    presets: dict[str, dict[str, Any]],
    with_reference: bool,
    split: str,
    env: dict[str, str],
) -> list[Result]:
    """One run of every row with `seed`, in table order."""
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as scratch:
        root = Path(scratch)
        results = [run_reference(seed, split, root, base, env)] if with_reference else []
        for name, overrides in presets.items():
            results.append(run_preset(name, deep_merge(base, overrides), seed, split, root, env))
    return results


def machine() -> str:
    """What the figures were measured on."""
    found = process.describe("(not recorded)")
    return (
        f"{date.today()}, {found['usable_cores']} CPU cores ({found['cpu']}, {found['cpu_isa']}), {found['device']}, "
        f"Python {found['python']}, TensorFlow {found['tensorflow']}, Keras {found['keras']}"
    )


def mean_sd(values: list[float], digits: int) -> str:
    """ "mean ± sd" of the values (just the value for one), with `digits` decimals."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def accuracy_cell(runs_of_row: list[Result]) -> str:
    """Mean ± sd of the row's accuracies over seeds; "—" where the row has none for this split."""
    found = [r.accuracy for r in runs_of_row if r.accuracy is not None]
    return mean_sd(found, 4) if found else "—"


def table(rows: list[list[Result]], split: str) -> str:
    """One Markdown row per list of runs (one per seed); times as means, ratios against the first row's mean."""
    base = statistics.mean(r.total_seconds for r in rows[0])
    columns = (
        "run",
        f"{split} accuracy",
        "train + predict (s)",
        "train (s)",
        "predict (s)",
        "time vs first row",
        "seeds",
        "parameters",
        "epochs",
        "ran on",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for runs_of_row in rows:
        first = runs_of_row[0]
        total = statistics.mean(r.total_seconds for r in runs_of_row)
        lines.append(
            f"| {first.name} | {accuracy_cell(runs_of_row)} | {mean_sd([r.total_seconds for r in runs_of_row], 0)} | "
            f"{mean_sd([r.train_seconds for r in runs_of_row], 0)} | "
            f"{mean_sd([r.predict_seconds for r in runs_of_row], 1)} | {total / base:.2f}x | "
            f"{', '.join(str(r.seed) for r in runs_of_row)} | {first.parameters:,} | {first.epochs} | {first.compute} |"
        )
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """ "0,1,2" -> [0, 1, 2]; a one-line error for anything else."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise PipelineError(f"--seeds must be distinct integers >= 0 separated by commas, such as 0,1,2; got {text}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m bench.training`."""
    parser.add_argument("--presets", default="reference,default,fast", help="comma-separated; 'default' = params.yaml")
    parser.add_argument("--seeds", default="0", help="train.seed values, comma-separated (default: %(default)s)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="the accuracy shown (val: for tuning)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference script")
    parser.add_argument("--isa", help="cap oneDNN at this ISA for every row (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    parser.add_argument(
        "--plot", type=Path, help="also draw accuracy against time (PNG) here, with accuracies reported elsewhere"
    )


def main(argv: list[str]) -> int:
    """Run every row for every seed, print the table (and write it to --out)."""
    parser = cli.parser("bench.training", __doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not files.PREPARED_DIR.is_dir():
        raise PipelineError(f"{files.PREPARED_DIR} is missing; run `dvc repro prepare` first")
    seeds = parse_seeds(args.seeds)
    base = yaml.safe_load(files.PARAMS_FILE.read_text())
    presets = {name: {} if name == "default" else load_preset(name) for name in args.presets.split(",")}
    commit = runs.workspace_commit() or "unknown"
    env = {"ONEDNN_MAX_CPU_ISA": args.isa} if args.isa else {}
    os.environ.update(env)  # before this process loads TensorFlow: it predicts under the same cap as the stages
    rounds = [run_round(seed, base, presets, not args.no_reference, args.split, env) for seed in seeds]
    report = (
        f"{table([list(row) for row in zip(*rounds, strict=True)], args.split)}\n\n"
        f"Measured by `{cli.typed(parser, argv)}` at commit {commit}: {machine()}"
        f"{'' if not env else f', every row with ONEDNN_MAX_CPU_ISA={args.isa}'}."
    )
    cli.publish(report, args.out)
    if args.plot:
        save_frontier([list(row) for row in zip(*rounds, strict=True)], args.plot, machine().split("), ")[0] + ")")
    return 0


def save_frontier(rows: list[list[Result]], target: Path, machine_line: str) -> None:
    """Draw each row's mean accuracy ± sd against its time relative to the first row's (the reference script's)."""
    base = statistics.mean(r.total_seconds for r in rows[0])
    points = []
    for runs_of_row in rows:
        accuracies = [r.accuracy for r in runs_of_row if r.accuracy is not None]
        if accuracies:
            sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            ratio = statistics.mean(r.total_seconds for r in runs_of_row) / base
            points.append((runs_of_row[0].name, ratio, statistics.mean(accuracies), sd))
    figure = plots.frontier(points, ANCHORS, rows[0][0].name, machine_line)
    with files.atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


if __name__ == "__main__":
    cli.run(main)
