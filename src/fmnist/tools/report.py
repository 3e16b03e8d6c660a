"""`fmnist report`: the pull-request review report, the same locally as in CI.

    fmnist report [--base main] [--retrain-base] [--fail-on worse] [--out report.md] [--plots-dir report/plots]

Compares the workspace with a base revision and writes report.md. First whether the test accuracy really changed:
both accuracies, the difference with a paired 95% interval, McNemar's test on the test images that only one of
the two models gets right, the seed spread recorded at the base (metrics/seeds.json) and a verdict by a stated
rule (docs/comparing-runs.md), per class too; a banner when the two models were trained in different
environments. Then calibration and the unsure answers (ECE, coverage, each not-garment set's AUROC and share
answered unsure...) by the same rule, with paired bootstrap intervals. If the workspace holds your own held-out
images (docs/own-data.md), both models answer them and are compared image by image (the base's model comes from
the DVC cache or remote: the one thing that needs either).
Then `dvc params diff` and `dvc metrics diff` as tables, the plot files that changed, and the side-by-side plots
of `dvc plots diff`. Everything else it reads is committed (cache: false).
Run it from the repository root after `dvc repro` (or `dvc pull`); report.md and report/ are git-ignored.

Exit status: 0, the report is written; 1, it could not be (one line says why); 3, it is written and its verdict
is one that --fail-on names (`--fail-on worse` is the pull-request check: .github/workflows/pr-report.yml).
"""

import argparse
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fmnist.lib import answers, files, runs
from fmnist.lib.dvc_cli import dvc
from fmnist.lib.process import PipelineError, VerdictRefused
from fmnist.lib.sides import Reader, Side, add_fail_on, option_word, read_side
from fmnist.lib.stats import VERDICTS, Verdict
from fmnist.tools import report_own_images, report_unsure
from fmnist.tools.report_compare import comparison, signed

DEFAULT_BASE = "main"
DEFAULT_OUT = Path("report.md")
DEFAULT_PLOTS_DIR = Path("report/plots")
SUMMARY_METRICS = (files.VAL_METRICS_FILE, files.TEST_METRICS_FILE)  # shown in full
OWN_DATA_METRICS = (files.DATA_METRICS_FILE, files.OWN_TEST_METRICS_FILE)  # shown where they changed
PLOT_LABELS = {  # what a reviewer calls each plot file (or directory of them)
    files.TEST_ANSWERS_FILE: "each test image's answer, and the confusion matrix",
    files.VAL_ANSWERS_FILE: "each validation image's answer, and the confusion matrix",
    files.NOT_GARMENTS_ANSWERS_FILE: "unsure score of each image that is not a garment",
    files.NOT_GARMENTS_PLOT: "how well the unsure score tells each not-garment set from the test images",
    files.PER_CLASS_PLOT: "precision, recall and F1 per class",
    files.CALIBRATION_PLOT: "calibration error, loss and Brier before and after calibration",
    files.RELIABILITY_PLOT: "test accuracy against confidence",
    files.RISK_COVERAGE_PLOT: "test error among the surest answers",
    files.EXPORT_PLOT: "how often each export answers as the model",
    files.OWN_IMAGES_PLOT: "own images per class",
    answers.LEGACY_FILES["test"]: "confusion matrix (before answers/test.csv)",
    answers.LEGACY_FILES["val"]: "validation confusion matrix (before answers/val.csv)",
    files.TRAIN_LOG_DIR: "training curves (and the environment of the run)",
    files.MISCLASSIFIED_PLOT: "misclassified test images",
    files.RANDOM_PREDICTIONS_PLOT: "random test predictions",
    files.CONFUSED_PAIRS_PLOT: "most confused pairs",
    files.TRAINING_CURVES_PLOT: "training curves, as a picture",
    files.UNSURE_PLOT: "calibration and unsure answers, as a picture",
}
TITLE = "## Pipeline report"


# Pure formatting: no files, no subprocesses.


def fallback_headline(base_name: str, base: float | None, head: float, why: str) -> str:
    """The first line when the base has no per-image predictions: both accuracies, no verdict, and why."""
    shown = f"{base_name} {base:.4f} → workspace {head:.4f} ({signed(head - base)})" if base is not None else ""
    return f"**Test accuracy: {shown or f'workspace {head:.4f}'}** (no verdict: {why})"


def has_rows(table: str) -> bool:
    """Whether DVC's Markdown table has rows (without any, DVC prints just the header, or nothing)."""
    return len(table.strip().splitlines()) > 2


def table_or_note(table: str, note: str) -> str:
    """DVC's Markdown table, or `note` when it has no rows."""
    return table.strip() if has_rows(table) else f"_{note}_"


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


# Reading each side: git for the base (everything compared is committed), files for the workspace.


def git(*args: str) -> subprocess.CompletedProcess[str]:
    """Run git; output captured as text, exit status left to the caller."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError("git is not installed or not on PATH; the report compares git revisions") from None


def check_base(rev: str) -> None:
    """Fail with a one-line message unless `rev` names a commit of this git repository."""
    if not Path("dvc.yaml").is_file():
        raise PipelineError("dvc.yaml not found; run `fmnist report` from the repository root")
    if rev.startswith("-") or git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode:
        raise PipelineError(f"unknown base revision {rev!r}; `git fetch` it or pass another --base")


def retrained_base(rev: str, environment: dict[str, Any] | None) -> Side | None:
    """The base revision trained and evaluated in `environment` (the workspace's), in a temporary git worktree.

    The worktree shares this repository's DVC cache. Where that cache (or its run-cache, which CI keeps between
    runs) holds the base's outputs from a run in the same environment, they are used as they are; otherwise train
    and evaluate run again here, with --no-run-cache: not the results recorded on another machine. Costs at most
    one training run.
    """
    cache = Path(dvc("cache", "dir").stdout.strip()).resolve()
    name = f"`{rev}` (trained in this environment)"
    with tempfile.TemporaryDirectory(prefix="fmnist-base-") as scratch:
        tree = Path(scratch) / "base"
        if git("worktree", "add", "--detach", str(tree), rev).returncode:
            raise PipelineError(f"could not check out {rev} in a temporary worktree; check `git worktree list`")
        try:
            dvc("cache", "dir", "--local", str(cache), cwd=tree)
            dvc("repro", "evaluate", cwd=tree, echo=True)  # from the cache where it can, else it runs here
            side = read_side(name, Reader(root=tree))
            if side is not None and side.environment != environment:
                print(f"report: retraining {rev} on this machine in {tree} (one training run)", flush=True)
                again = retraining_stages(tree)
                dvc("repro", "--force", "--no-run-cache", "--single-item", *again, cwd=tree, echo=True)
                side = read_side(name, Reader(root=tree))
            return side
        finally:
            git("worktree", "remove", "--force", str(tree))
            shutil.rmtree(tree, ignore_errors=True)


def retraining_stages(tree: Path) -> list[str]:
    """The stages of runs.SEED_RECORD_STAGES that the dvc.yaml in `tree` has (a base from before the calibrate stage
    trains and evaluates only), in that order."""
    stages = yaml.safe_load((tree / "dvc.yaml").read_text())["stages"]
    return [name for name in runs.SEED_RECORD_STAGES if name in stages]


def workspace_accuracy() -> float:
    """The test accuracy of the workspace's metrics/test.json."""
    if not files.TEST_METRICS_FILE.is_file():
        raise PipelineError(f"{files.TEST_METRICS_FILE} is missing; run `dvc repro` or `dvc pull` first")
    accuracy = runs.test_accuracy(runs.json_or_none(files.TEST_METRICS_FILE.read_text()))
    if accuracy is None:
        raise PipelineError(f"{files.TEST_METRICS_FILE} has no test.accuracy; run `dvc repro evaluate`")
    return accuracy


def plot_files() -> list[str]:
    """The plot files in the workspace, as posix paths relative to the root."""
    found = []
    for target in PLOT_LABELS:
        found += [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return [p.as_posix() for p in found]


def workspace_blobs() -> dict[str, str]:
    """{path: git blob id} of the workspace's plot files (`git hash-object`, nothing is written)."""
    found = plot_files()
    if not found:
        return {}
    result = git("hash-object", "--", *found)
    if result.returncode != 0:
        raise PipelineError(f"git hash-object failed: {result.stderr.strip()}")
    return dict(zip(found, result.stdout.split(), strict=True))


def base_blobs(rev: str) -> dict[str, str]:
    """{path: git blob id} of the plot files committed at `rev`."""
    result = git("ls-tree", "-r", "-z", rev, "--", *(p.as_posix() for p in PLOT_LABELS))
    if result.returncode != 0:
        raise PipelineError(f"git ls-tree {rev} failed: {result.stderr.strip()}")
    return parse_ls_tree(result.stdout)


def write_plots(rev: str, plots_dir: Path) -> Path:
    """`dvc plots diff REV -o plots_dir` (replacing the old directory atomically); returns its index.html."""
    with files.atomic_dir(plots_dir) as tmp:
        dvc("plots", "diff", rev, "-o", str(tmp))
    return plots_dir / "index.html"


def metrics_table(rev: str, targets: Sequence[Path], show_all: bool) -> str:
    """`dvc metrics diff REV --md` for `targets`, with unchanged metrics too if `show_all`."""
    everything = ["--all"] if show_all else []
    return dvc("metrics", "diff", rev, "--md", *everything, "--targets", *(t.as_posix() for t in targets)).stdout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fmnist report`."""
    parser.add_argument("--base", default=DEFAULT_BASE, help="git revision to compare with (default: main)")
    parser.add_argument(
        "--retrain-base",
        action="store_true",
        help="compare with the base trained in the workspace's environment: from the cache if it ran there "
        "before, else retrained here (one training run); the comparison then has no machine effect",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default: report.md)")
    add_fail_on(
        parser,
        "exit with status 3 when the test-accuracy verdict is this one (repeatable): "
        + ", ".join(map(option_word, VERDICTS)),
    )
    parser.add_argument(
        "--plots-dir",
        type=Path,
        default=DEFAULT_PLOTS_DIR,
        help="where `dvc plots diff` writes index.html (default: report/plots)",
    )


def dvc_sections(rev: str, plots_dir: Path) -> list[tuple[str, str]]:
    """(heading, Markdown) of the params table, the metrics tables and the plots, from DVC's diffs against `rev`."""
    params = dvc("params", "diff", rev, "--md").stdout
    summary = metrics_table(rev, SUMMARY_METRICS, show_all=True)
    own_data = metrics_table(rev, OWN_DATA_METRICS, show_all=False)
    changes = compare_blobs(base_blobs(rev), workspace_blobs())
    sections = [
        ("Params (`dvc params diff`)", table_or_note(params, f"No parameter differs from {rev}.")),
        ("Metrics (`dvc metrics diff`)", table_or_note(summary, "No metrics found.")),
        ("Plots", plots_section(rev, changes, write_plots(rev, plots_dir))),
    ]
    if has_rows(own_data):  # own images added, removed or scored differently
        sections.insert(2, ("Own images (`dvc metrics diff`)", own_data.strip()))
    return sections


def compared(rev: str, retrain: bool) -> tuple[str, list[tuple[str, str]], Verdict | None]:
    """(the top of the report, the comparison's sections, the verdict; None where the base cannot be compared)."""
    head_accuracy = workspace_accuracy()
    head = read_side("workspace", Reader())
    if retrain:
        base = retrained_base(rev, head.environment if head is not None else None)
    else:
        base = read_side(f"`{rev}`", Reader(rev))
    if head is None or base is None:
        where = "the workspace" if head is None else f"`{rev}`"
        base_accuracy = runs.test_accuracy(runs.json_or_none(runs.committed_text(files.TEST_METRICS_FILE, rev)))
        why = (
            f"{where} has no {answers.SPLIT_FILES['test']} (nor the older {answers.LEGACY_FILES['test']}), the "
            "per-image answers the comparison needs"
        )
        return fallback_headline(f"`{rev}`", base_accuracy, head_accuracy, why), [], None
    try:
        found = comparison(base, head)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    calibration = (report_unsure.HEADING, report_unsure.section(base, head))
    return found.top, [*found.sections, calibration], found.verdict


def run(args: argparse.Namespace) -> int:
    """Write the report; exit status 0, or 3 (VerdictRefused) when its verdict is one --fail-on names."""
    check_base(args.base)
    top, sections, verdict = compared(args.base, args.retrain_base)
    own = report_own_images.section(args.base, git("rev-parse", args.base).stdout.strip())
    text = build_report(top, sections + ([own] if own else []) + dvc_sections(args.base, args.plots_dir))
    files.write_bytes(args.out, text.encode())
    summary = next(line for line in top.splitlines() if line.startswith("**")).strip("*")
    print(f"report: {summary} -> {args.out}, plots -> {args.plots_dir}/index.html")
    refused = [word for word in args.fail_on or [] if verdict is not None and word == option_word(verdict.word)]
    if refused:
        assert verdict is not None
        raise VerdictRefused(
            f"the verdict against {args.base} is {verdict.word} ({verdict.reason}), which --fail-on {refused[0]} "
            f"refuses; the report is in {args.out}"
        )
    return 0
