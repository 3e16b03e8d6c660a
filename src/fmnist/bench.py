"""Benchmark on the real data: the seed's plain script, then the seed, default and fast presets, one table.

    python -m fmnist.bench [--presets seed,default,fast] [--no-reference] [--out bench.md]

Needs data/raw and data/prepared (`dvc repro prepare`). Each preset runs the real `train` and `evaluate` stage
commands, in a fresh process each as `dvc repro` runs them, in a scratch directory holding params.yaml with the
preset laid over it; the wall time of those two commands is what the table reports. Run it on an idle machine:
the figures are wall-clock seconds.
"""

import argparse
import json
import os
import platform
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

from fmnist import paths
from fmnist.dataset import load_split
from fmnist.errors import PipelineError, run_stage
from fmnist.evaluate import predict_probabilities
from fmnist.modelio import load_model
from fmnist.params import load_params
from fmnist.presets import deep_merge, load_preset


@dataclass(frozen=True)
class Result:
    name: str
    accuracy: float
    train_seconds: float
    evaluate_seconds: float
    predict_seconds: float  # the 10,000 test predictions alone, without process start-up
    parameters: int
    epochs: int

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.evaluate_seconds


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command (output streamed to our stderr for progress); return (wall seconds, its stdout)."""
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, text=True)
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


def run_preset(name: str, params: dict, root: Path) -> Result:
    """Train and evaluate with `params` through the stage commands; measure, then read what they wrote."""
    workspace = scratch_workspace(root / name, params)
    train_seconds, _ = timed([sys.executable, "-m", "fmnist.train"], workspace)
    evaluate_seconds, _ = timed([sys.executable, "-m", "fmnist.evaluate"], workspace)
    model = load_model(workspace / paths.MODEL_FILE)
    test = load_split("test")
    start = time.perf_counter()
    predict_probabilities(model, test.images, load_params(workspace / paths.PARAMS_FILE).evaluate)
    predict_seconds = time.perf_counter() - start
    accuracy = json.loads((workspace / paths.TEST_METRICS_FILE).read_text())["test"]["accuracy"]
    epochs = (workspace / paths.TRAIN_LOG_DIR / "plots/metrics/train/loss.tsv").read_text().count("\n") - 1
    return Result(name, accuracy, train_seconds, evaluate_seconds, predict_seconds, model.count_params(), epochs)


def run_reference(root: Path, params: dict) -> Result:
    """The seed's plain Keras script, as one process: its fit and evaluate are both in the measured time."""
    workspace = scratch_workspace(root / "reference", params)  # the script reads data/raw only
    seconds, stdout = timed([sys.executable, "-m", "fmnist.reference"], workspace)
    report = json.loads(stdout.strip().splitlines()[-1])
    return Result("seed script (plain Keras)", report["test_accuracy"], seconds, 0.0, report["evaluate_seconds"],
                  report["parameters"], report["epochs"])  # fmt: skip


def machine() -> str:
    """What the figures were measured on."""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] or ["no GPU"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return (f"{date.today()}, {os.cpu_count()} CPU cores ({cpu}), {', '.join(gpus)}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")  # fmt: skip


def table(results: list[Result]) -> str:
    """The results as a Markdown table; times relative to the first row."""
    base = results[0].total_seconds
    lines = [
        "| run | test accuracy | train + evaluate (s) | train (s) | evaluate (s) | predict 10k (s) | time vs first row | parameters | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        lines.append(f"| {r.name} | {r.accuracy:.4f} | {r.total_seconds:.0f} | {r.train_seconds:.0f} | "
                     f"{r.evaluate_seconds:.1f} | {r.predict_seconds:.2f} | {r.total_seconds / base:.2f}x | {r.parameters:,} | {r.epochs} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="seed,default,fast", help="comma-separated; 'default' = params.yaml")
    parser.add_argument("--no-reference", action="store_true", help="skip the seed's plain script")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args()
    if not paths.PREPARED_DIR.is_dir():
        raise PipelineError(f"{paths.PREPARED_DIR} is missing; run `dvc repro prepare` first")
    base = yaml.safe_load(paths.PARAMS_FILE.read_text())
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as scratch:
        results = [] if args.no_reference else [run_reference(Path(scratch), base)]
        for name in args.presets.split(","):
            overrides = {} if name == "default" else load_preset(name)
            results.append(run_preset(name, deep_merge(base, overrides), Path(scratch)))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    report = f"{table(results)}\n\nMeasured by `python -m fmnist.bench` at commit {commit or 'unknown'}: {machine()}.\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    run_stage(main)
