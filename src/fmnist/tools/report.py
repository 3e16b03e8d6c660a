"""`python -m fmnist.tools.report`: the pull-request review report, the same locally as in CI.

Compares the workspace with a base revision using DVC's own diffs and writes report.md: the test accuracy
at the base and in the workspace with the signed delta first, then `dvc params diff` and `dvc metrics diff`
as Markdown tables, the plot files that changed, and a link to the side-by-side plots of `dvc plots diff`.
Run it from the repository root after `dvc repro` (or `dvc pull`); report.md and report/ are git-ignored.
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fmnist.lib import atomic, paths
from fmnist.lib.errors import PipelineError, run_stage

DEFAULT_BASE = "main"
DEFAULT_OUT = Path("report.md")
DEFAULT_PLOTS_DIR = Path("report/plots")
TRAIN_METRICS_FILE = paths.TRAIN_LOG_DIR / "metrics.json"
TRAIN_PLOTS_DIR = paths.TRAIN_LOG_DIR / "plots"
SUMMARY_METRICS = (paths.TEST_METRICS_FILE, TRAIN_METRICS_FILE)  # shown in full; per-class only where changed
PLOT_LABELS = {  # what a reviewer calls each plot file (or directory of them)
    paths.CONFUSION_FILE: "confusion matrix",
    TRAIN_PLOTS_DIR: "training curves",
    paths.MISCLASSIFIED_PLOT: "misclassified test images",
    paths.RANDOM_PREDICTIONS_PLOT: "random test predictions",
    paths.CONFUSED_PAIRS_PLOT: "most confused pairs",
}
TITLE = "## Pipeline report"


# Pure formatting: no files, no subprocesses.


def signed(delta: float) -> str:
    """A delta with 4 decimals (one test image in 10,000) and its sign; a rounded zero reads ±0.0000."""
    return "±0.0000" if round(delta, 4) == 0 else f"{delta:+.4f}"


def accuracy_from_json(text: str) -> float:
    """The test accuracy in the text of metrics/test.json; ValueError if it is not there."""
    try:
        value = json.loads(text)["test"]["accuracy"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"no test.accuracy in {paths.TEST_METRICS_FILE} ({type(exc).__name__})") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"test.accuracy in {paths.TEST_METRICS_FILE} is not a number: {value!r}")
    return float(value)


def headline(base_rev: str, base: float | None, new: float, missing_reason: str = "") -> str:
    """The first line of the report: accuracy at `base_rev` and in the workspace, and the signed delta."""
    if base is None:
        reason = missing_reason or f"`{base_rev}` has no {paths.TEST_METRICS_FILE}"
        return f"**Test accuracy: workspace {new:.4f}** (no delta: {reason})"
    delta = new - base
    trend = "unchanged" if round(delta, 4) == 0 else "better" if delta > 0 else "worse"
    return f"**Test accuracy: `{base_rev}` {base:.4f} → workspace {new:.4f} ({signed(delta)}, {trend})**"


def table_or_note(table: str, note: str) -> str:
    """DVC's Markdown table, or `note` when it has no rows (DVC prints just the header, or nothing)."""
    lines = table.strip().splitlines()
    return "\n".join(lines) if len(lines) > 2 else f"_{note}_"


def details(summary: str, body: str) -> str:
    """A collapsed block (GitHub renders <details>), for long tables."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def parse_ls_tree(text: str) -> dict[str, str]:
    """{path: blob id} from the output of `git ls-tree -r -z`."""
    blobs = {}
    for entry in filter(None, text.split("\0")):
        meta, path = entry.split("\t", 1)
        blobs[path] = meta.split()[2]
    return blobs


def compare_blobs(base: Mapping[str, str], workspace: Mapping[str, str]) -> dict[str, str]:
    """{path: changed | added | removed} for the files that differ, sorted by path."""
    statuses = {}
    for path in sorted(set(base) | set(workspace)):
        if path not in base:
            statuses[path] = "added"
        elif path not in workspace:
            statuses[path] = "removed"
        elif base[path] != workspace[path]:
            statuses[path] = "changed"
    return statuses


def plot_label(path: str) -> str:
    """The reviewer's name for a plot file, from PLOT_LABELS (a file or a directory above it)."""
    for target, label in PLOT_LABELS.items():
        if Path(path) == target or target in Path(path).parents:
            return label
    return "plot"


def plots_section(base_rev: str, changes: Mapping[str, str], index: Path) -> str:
    """The changed plot files (one bullet each) and where the side-by-side plots are."""
    lines = [f"- `{path}` ({plot_label(path)}): {status}" for path, status in changes.items()]
    body = "\n".join(lines) if lines else f"_No plot file differs from `{base_rev}`._"
    return f"{body}\n\nBase and workspace side by side (`dvc plots diff`): open `{index.as_posix()}` in a browser."


def build_report(top: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole Markdown document: title, headline, then one `### heading` per section."""
    parts = [TITLE, top] + [f"### {heading}\n\n{body}" for heading, body in sections]
    return "\n\n".join(parts) + "\n"


# Subprocesses: git and DVC, run in the current directory (the repository root).


def capture(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run a command; output captured as text, exit status left to the caller."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError(f"{args[0]} is not installed or not on PATH") from None


def dvc_output(*args: str) -> str:
    """stdout of `dvc ARGS` (DVC of this environment); a failure becomes a PipelineError naming the command."""
    result = capture([sys.executable, "-m", "dvc", *args])
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise PipelineError(f"`dvc {' '.join(args)}` failed: {lines[-1].removeprefix('ERROR: ')}")
    return result.stdout


def check_base(rev: str) -> None:
    """Fail with a one-line message unless `rev` names a commit of this git repository."""
    if not Path("dvc.yaml").is_file():
        raise PipelineError("dvc.yaml not found; run `python -m fmnist.tools.report` from the repository root")
    if rev.startswith("-") or capture(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"]).returncode:
        raise PipelineError(f"unknown base revision {rev!r}; `git fetch` it or pass another --base")


def workspace_accuracy() -> float:
    """The test accuracy of the workspace's metrics/test.json."""
    try:
        return accuracy_from_json(paths.TEST_METRICS_FILE.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{paths.TEST_METRICS_FILE} is missing; run `dvc repro` or `dvc pull` first") from None
    except ValueError as exc:
        raise PipelineError(f"{exc}; run `dvc repro evaluate`") from None


def base_accuracy(rev: str) -> tuple[float | None, str]:
    """(accuracy at `rev`, "") or (None, why not): metrics/test.json is git-tracked (cache: false)."""
    result = capture(["git", "show", f"{rev}:{paths.TEST_METRICS_FILE.as_posix()}"])
    if result.returncode != 0:
        return None, f"`{rev}` has no {paths.TEST_METRICS_FILE}"
    try:
        return accuracy_from_json(result.stdout), ""
    except ValueError as exc:
        return None, f"at `{rev}`, {exc}"


def plot_files() -> list[str]:
    """The plot files in the workspace, as posix paths relative to the root."""
    found = []
    for target in PLOT_LABELS:
        found += [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return [p.as_posix() for p in found]


def workspace_blobs() -> dict[str, str]:
    """{path: git blob id} of the workspace's plot files (`git hash-object`, nothing is written)."""
    files = plot_files()
    if not files:
        return {}
    result = capture(["git", "hash-object", "--", *files])
    if result.returncode != 0:
        raise PipelineError(f"git hash-object failed: {result.stderr.strip()}")
    return dict(zip(files, result.stdout.split(), strict=True))


def base_blobs(rev: str) -> dict[str, str]:
    """{path: git blob id} of the plot files committed at `rev`."""
    result = capture(["git", "ls-tree", "-r", "-z", rev, "--", *(p.as_posix() for p in PLOT_LABELS)])
    if result.returncode != 0:
        raise PipelineError(f"git ls-tree {rev} failed: {result.stderr.strip()}")
    return parse_ls_tree(result.stdout)


def write_plots(rev: str, plots_dir: Path) -> Path:
    """`dvc plots diff REV -o plots_dir` (replacing the old directory atomically); returns its index.html."""
    with atomic.atomic_dir(plots_dir) as tmp:
        dvc_output("plots", "diff", rev, "-o", str(tmp))
    return plots_dir / "index.html"


def metrics_table(rev: str, targets: Sequence[Path], show_all: bool) -> str:
    """`dvc metrics diff REV --md` for `targets`, with unchanged metrics too if `show_all`."""
    return dvc_output(
        "metrics", "diff", rev, "--md", *(["--all"] if show_all else []), "--targets", *(t.as_posix() for t in targets)
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: --base, --out, --plots-dir."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.tools.report", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="git revision to compare with (default: main)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default: report.md)")
    parser.add_argument(
        "--plots-dir",
        type=Path,
        default=DEFAULT_PLOTS_DIR,
        help="where `dvc plots diff` writes index.html (default: report/plots)",
    )
    return parser.parse_args(argv)


def report_sections(rev: str, plots_dir: Path) -> list[tuple[str, str]]:
    """(heading, Markdown) of the params table, the metrics tables and the plots, from DVC's diffs against `rev`."""
    params = dvc_output("params", "diff", rev, "--md")
    summary = metrics_table(rev, SUMMARY_METRICS, show_all=True)
    per_class = metrics_table(rev, [paths.PER_CLASS_METRICS_FILE], show_all=False)
    changes = compare_blobs(base_blobs(rev), workspace_blobs())
    return [
        ("Params (`dvc params diff`)", table_or_note(params, f"No parameter differs from {rev}.")),
        ("Metrics (`dvc metrics diff`)", table_or_note(summary, "No metrics found.")),
        (
            "Per-class metrics",
            details(
                "Changed per-class precision, recall and F1", table_or_note(per_class, "No per-class metric changed.")
            ),
        ),
        ("Plots", plots_section(rev, changes, write_plots(rev, plots_dir))),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_base(args.base)
    new = workspace_accuracy()
    base, reason = base_accuracy(args.base)
    text = build_report(headline(args.base, base, new, reason), report_sections(args.base, args.plots_dir))
    atomic.write_bytes(args.out, text.encode())
    delta = "" if base is None else f" ({signed(new - base)})"
    print(f"report: test accuracy {new:.4f}{delta} vs {args.base} -> {args.out}, plots -> {args.plots_dir}/index.html")


if __name__ == "__main__":
    run_stage(main)
