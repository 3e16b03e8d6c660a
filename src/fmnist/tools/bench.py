"""Benchmark on the real data: the seed's plain script, then the seed, default and fast presets, one table.

    python -m fmnist.tools.bench [--presets seed,default,fast] [--repeats 3] [--no-reference] [--isa AVX2]
                                 [--out bench.md]

A preset with `train.distribute: multi_worker` (presets/two-workers.yaml) trains with two worker processes on
this machine, each in its own scratch directory.

Needs data/raw and data/prepared (`dvc repro prepare`). Each preset runs the real `train` and `evaluate` stage
commands, in a fresh process each as `dvc repro` runs them, in a scratch directory holding params.yaml with the
preset laid over it; the wall time of those two commands is what the table reports. Run it on an idle machine:
the figures are wall-clock seconds. With --repeats N every row runs N times, in N interleaved rounds so that a
slow spell of the machine hits all rows alike, and the table gives each row's median run (by total time).
With --isa AVX2 every row, the seed script's included, runs with ONEDNN_MAX_CPU_ISA=AVX2: oneDNN as on the
common CPUs without AVX512 (most laptops, many cloud VMs and CI runners), whatever this machine has.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import keras
import tensorflow as tf
import yaml

from fmnist.lib import paths
from fmnist.lib.dataset import load_split
from fmnist.lib.errors import PipelineError, run_stage
from fmnist.lib.params import load_params
from fmnist.nn import distribute
from fmnist.nn.inference import Predictor
from fmnist.nn.modelio import load_model
from fmnist.tools.presets import deep_merge, load_preset


@dataclass(frozen=True)
class Result:
    name: str
    accuracy: float
    train_seconds: float
    evaluate_seconds: float
    predict_seconds: float  # the 10,000 test predictions alone, without process start-up
    parameters: int
    epochs: int
    compute: str  # the device and the precision it trained in, e.g. "CPU, float32"

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.evaluate_seconds


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run a command with `env` added (output streamed to our stderr); return (wall seconds, its stdout)."""
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(result.stdout)
    if result.returncode != 0:
        raise PipelineError(f"`{' '.join(args)}` failed in {cwd} (exit {result.returncode})")
    return seconds, result.stdout


def scratch_workspace(root: Path, params: dict) -> Path:
    """A directory where the stages see this repository's data and `params` as params.yaml."""
    (root / "data").mkdir(parents=True)
    for data_dir in (paths.RAW_DIR, paths.PREPARED_DIR):
        (root / data_dir).symlink_to(data_dir.resolve(), target_is_directory=True)
    (root / paths.PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def timed_local_workers(chief: Path, worker: Path, env: dict[str, str]) -> float:
    """Train with two multi_worker processes on this machine; the chief's wall time (both end together)."""
    configs = [{**env, "TF_CONFIG": json.dumps(config)} for config in distribute.local_cluster(2)]
    other = subprocess.Popen(
        [sys.executable, "-m", "fmnist.stages.train"],
        cwd=worker,
        env={**os.environ, **configs[1]},
        stdout=subprocess.DEVNULL,
    )
    try:
        seconds, _ = timed([sys.executable, "-m", "fmnist.stages.train"], chief, configs[0])
    finally:
        other.wait()  # it ends with the chief: on success, or when the chief's failure breaks its all-reduce
    if other.returncode != 0:
        raise PipelineError(f"the second worker failed in {worker} (exit {other.returncode})")
    return seconds


def device() -> str:
    """Where TensorFlow runs the rows: the first GPU it sees, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"


def run_preset(name: str, params: dict, root: Path, env: dict[str, str]) -> Result:
    """Train and evaluate with `params` through the stage commands; measure, then read what they wrote."""
    workspace = scratch_workspace(root / name, params)
    if params["train"]["distribute"] == "multi_worker":
        train_seconds = timed_local_workers(workspace, scratch_workspace(root / f"{name}-worker", params), env)
    else:
        train_seconds, _ = timed([sys.executable, "-m", "fmnist.stages.train"], workspace, env)
    evaluate_seconds, _ = timed([sys.executable, "-m", "fmnist.stages.evaluate"], workspace, env)
    model = load_model(workspace / paths.MODEL_FILE)
    test = load_split("test")
    start = time.perf_counter()
    Predictor(model, load_params(workspace / paths.PARAMS_FILE).inference)(test.images)
    predict_seconds = time.perf_counter() - start
    accuracy = json.loads((workspace / paths.TEST_METRICS_FILE).read_text())["test"]["accuracy"]
    epochs = (workspace / paths.TRAIN_LOG_DIR / "plots/metrics/train/loss.tsv").read_text().count("\n") - 1
    precision = json.loads((workspace / paths.TRAIN_LOG_DIR / "metrics.json").read_text())["precision"]
    return Result(
        name,
        accuracy,
        train_seconds,
        evaluate_seconds,
        predict_seconds,
        model.count_params(),
        epochs,
        f"{device()}, {precision}",
    )


def run_reference(root: Path, params: dict, env: dict[str, str]) -> Result:
    """The seed's plain Keras script, as one process: its fit and evaluate are both in the measured time."""
    workspace = scratch_workspace(root / "reference", params)  # the script reads data/raw only
    seconds, stdout = timed([sys.executable, "-m", "fmnist.tools.reference"], workspace, env)
    report = json.loads(stdout.strip().splitlines()[-1])
    return Result(
        "seed script (plain Keras)",
        report["test_accuracy"],
        seconds,
        0.0,
        report["evaluate_seconds"],
        report["parameters"],
        report["epochs"],
        f"{device()}, float32",
    )


def run_round(base: dict, presets: dict[str, dict], with_reference: bool, env: dict[str, str]) -> list[Result]:
    """One run of every row, in table order."""
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as scratch:
        results = [run_reference(Path(scratch), base, env)] if with_reference else []
        for name, overrides in presets.items():
            results.append(run_preset(name, deep_merge(base, overrides), Path(scratch), env))
    return results


def machine() -> str:
    """What the figures were measured on."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] or ["no GPU"]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{date.today()}, {os.cpu_count()} CPU cores ({cpu}), {', '.join(gpus)}, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def median_run(runs: list[Result]) -> Result:
    """The run with the median total time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.total_seconds)[(len(runs) - 1) // 2]


def accuracy_cell(runs: list[Result]) -> str:
    """The accuracy when every run agrees (deterministic params), else the median and the range."""
    found = sorted(r.accuracy for r in runs)
    if found[0] == found[-1]:
        return f"{found[0]:.4f}"
    return f"{statistics.median(found):.4f} (median; {found[0]:.4f}-{found[-1]:.4f})"


def table(rows: list[list[Result]]) -> str:
    """One Markdown row per list of repeated runs (its median run); times relative to the first row's median."""
    base = median_run(rows[0]).total_seconds
    columns = (
        "run",
        "test accuracy",
        "train + evaluate (s)",
        "all runs (s)",
        "train (s)",
        "evaluate (s)",
        "predict 10k (s)",
        "time vs first row",
        "parameters",
        "epochs",
        "ran on",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for runs in rows:
        r = median_run(runs)
        every = ", ".join(f"{x.total_seconds:.0f}" for x in runs)
        lines.append(
            f"| {r.name} | {accuracy_cell(runs)} | {r.total_seconds:.0f} | {every} | {r.train_seconds:.0f} | "
            f"{r.evaluate_seconds:.1f} | {r.predict_seconds:.2f} | {r.total_seconds / base:.2f}x | {r.parameters:,} | "
            f"{r.epochs} | {r.compute} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="seed,default,fast", help="comma-separated; 'default' = params.yaml")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the table gives the median")
    parser.add_argument("--no-reference", action="store_true", help="skip the seed's plain script")
    parser.add_argument("--isa", help="cap oneDNN at this ISA for every row (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args()
    if not paths.PREPARED_DIR.is_dir():
        raise PipelineError(f"{paths.PREPARED_DIR} is missing; run `dvc repro prepare` first")
    base = yaml.safe_load(paths.PARAMS_FILE.read_text())
    if args.repeats < 1:
        raise PipelineError(f"--repeats must be at least 1, not {args.repeats}")
    presets = {name: {} if name == "default" else load_preset(name) for name in args.presets.split(",")}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    env = {"ONEDNN_MAX_CPU_ISA": args.isa} if args.isa else {}
    rounds = [run_round(base, presets, not args.no_reference, env) for _ in range(args.repeats)]
    command = " ".join(["python -m fmnist.tools.bench", *sys.argv[1:]])
    report = (
        f"{table([list(runs) for runs in zip(*rounds, strict=True)])}\n\n"
        f"Measured by `{command}` at commit {commit or 'unknown'}: {machine()}"
        f"{'' if not env else f', every row with ONEDNN_MAX_CPU_ISA={args.isa}'}.\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    run_stage(main)
