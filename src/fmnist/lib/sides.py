"""One side of a comparison (a commit, the workspace, a base retrained here) as its committed files record it, the
figures of calibration and unsure answers computed from them, and the verdict on the test accuracy between two
sides. Shared by `fmnist report`, the release gate and `fmnist seeds`, which records the spread of those figures.

A side is read through a reader of files (`Reader`: at a git revision, or from a directory): each test image's
answer (fmnist.lib.answers), the seed record, the training environment and curve, and the unsure answers to the
not-garment sets. The figures are computed per image, so that the report can resample them (fmnist.lib.stats).
"""

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fmnist.lib import answers, files, runs, stats
from fmnist.lib.answers import SplitAnswers
from fmnist.lib.process import PipelineError

Read = Callable[[Path], str | None]  # a file's text at one side (a git revision or a directory), None if absent


@dataclass(frozen=True)
class Unsure:
    """What a side recorded of its calibration and unsure answers besides each test image's answer."""

    not_garments: dict[str, tuple[np.ndarray, np.ndarray]]  # {set: ((M,) float scores, +inf for a photo the
    # conversion refused; (M,) bool unsure)} from answers/not_garments.csv; {} without it
    photo_sure: float | None  # metrics/test.json's photo_sure: photo-like test garments answered sure
    target: float | None  # params.yaml's unsure.coverage: the validation coverage the threshold was set for
    images: str | None  # dvc.lock's MD5 of data/not_garments: which not-garment images the sets held


@dataclass(frozen=True)
class Side:
    """One side of the comparison (the base revision, or the workspace) as it was read."""

    name: str  # "`main`" or "workspace", as shown in the report
    test: SplitAnswers  # its answer to each test image (fmnist.lib.answers), in test-set order
    environment: dict[str, Any] | None  # metrics/train/metrics.json's environment, None if not recorded
    seeds: Any  # metrics/seeds.json (parsed), None if there is none
    seeds_current: bool  # whether that seed record was measured for this side's code and params
    curve: tuple[float, ...] = ()  # validation accuracy after each training epoch (dvclive's), () if unknown
    unsure: Unsure | None = None  # None for a commit from before calibration (its answers have no unsure flags)

    @property
    def actual(self) -> np.ndarray:
        """(N,) true class indices of the test images."""
        return self.test.actual

    @property
    def right(self) -> np.ndarray:
        """(N,) bool: which test images this side's model gets right."""
        return self.test.right


# --- Reading a side ------------------------------------------------------------------------------------------------


class Reader:
    """Reads a repository file's text at a git revision, or from a directory (the workspace, a retrained base)."""

    def __init__(self, rev: str | None = None, root: Path = Path(".")) -> None:
        self.rev, self.root = rev, root

    def __call__(self, path: Path) -> str | None:
        if self.rev is not None:
            return runs.committed_text(path, self.rev)
        file = self.root / path
        return file.read_text() if file.is_file() else None


def read_side(name: str, read: Read) -> Side | None:
    """A side from the files `read` returns (text or None); None without per-image answers."""
    try:
        test = answers.read(read, "test")
        unsure = read_unsure(read, test) if test is not None else None
    except ValueError as exc:
        raise PipelineError(f"{name}: {exc}; run `dvc repro evaluate` there") from None
    if test is None:
        return None
    seeds = runs.json_or_none(read(files.SEEDS_FILE))
    recorded = seeds.get("seeds", {}).get("fingerprint") if isinstance(seeds, dict) else None
    current = recorded is not None and recorded == runs.fingerprint(read(files.DVC_LOCK_FILE))
    environment = runs.environment_of(runs.json_or_none(read(files.TRAIN_METRICS_FILE)))
    curve = curve_from_tsv(read(files.VAL_CURVE_FILE))
    return Side(name, test, environment, seeds, current, curve, unsure)


def curve_from_tsv(text: str | None) -> tuple[float, ...]:
    """The values of a dvclive TSV (`step<TAB>value` rows under a header), () for none or a broken file."""
    try:
        return tuple(float(line.split("\t")[1]) for line in (text or "").strip().splitlines()[1:])
    except (IndexError, ValueError):
        return ()


def coverage_target(params_text: str | None) -> float | None:
    """unsure.coverage of a params.yaml's text, None where it has none."""
    try:
        return runs.number(yaml.safe_load(params_text or "")["unsure"]["coverage"])
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def read_unsure(read: Read, test: SplitAnswers) -> Unsure | None:
    """What a side recorded of its unsure answers (`read`: a file's text at that side, or None); None where its test
    answers have no confidence or unsure flags (a commit from before calibration). ValueError for a broken
    answers/not_garments.csv."""
    if test.unsure_score is None or test.unsure is None or test.actual_probability is None:
        return None
    text = read(files.NOT_GARMENTS_ANSWERS_FILE)
    found = answers.parse_not_garments(text) if text is not None else {}
    figures = runs.split_figures(runs.json_or_none(read(files.TEST_METRICS_FILE)), "test")
    return Unsure(
        # A photo the conversion refused has no score: it ranks above every scored image, as evaluate ranks it.
        not_garments={
            name: (np.where(np.isnan(scores), np.inf, scores), flags) for name, (scores, flags) in found.items()
        },
        photo_sure=runs.number(figures.get("photo_sure")),
        target=coverage_target(read(files.PARAMS_FILE)),
        images=runs.output_md5(read(files.DVC_LOCK_FILE), "not_garments", files.NOT_GARMENTS_DIR),
    )


# --- The verdict on the test accuracy ------------------------------------------------------------------------------


def accuracy_verdict(base: Side, head: Side) -> stats.Verdict:
    """The verdict on the head's test accuracy against the base's, by the rule of docs/comparing-runs.md: McNemar's
    test on the images only one of them gets right, against the base's seed spread. ValueError if the two did not
    answer the same test images."""
    if not np.array_equal(base.actual, head.actual):
        raise ValueError(
            f"{base.name} and the {head.name} did not predict the same test images ({answers.SPLIT_FILES['test']} "
            "differs in its actual column), so they cannot be compared image by image"
        )
    counts = stats.paired(base.right, head.right)
    p_value = stats.mcnemar_p(counts.only_base, counts.only_head)
    return stats.verdict(counts.delta, p_value, runs.seed_sd(base.seeds), counts.base_correct / counts.n)


def option_word(verdict: str) -> str:
    """A verdict as `--fail-on` writes it: "within noise" -> "within-noise"."""
    return verdict.replace(" ", "-")


def add_fail_on(parser: argparse.ArgumentParser, what: str) -> None:
    """The option `--fail-on VERDICT` (repeatable) of the report and the release gate; `what` is its help."""
    choices = [option_word(word) for word in stats.VERDICTS]
    parser.add_argument("--fail-on", action="append", choices=choices, metavar="VERDICT", help=what)


# --- The figures of calibration and unsure answers, per image ------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One compared figure: its name, where metrics/seeds.json's runs record it, its direction."""

    name: str
    seed_path: tuple[str, ...]
    lower_is_better: bool | None  # None: neither higher nor lower is better (coverage: its target is the goal)

    @property
    def label(self) -> str:
        """The name and which way is better."""
        if self.lower_is_better is None:
            return self.name
        return f"{self.name}, {'lower' if self.lower_is_better else 'higher'} is better"


ECE = Figure("ECE (calibration error)", ("ece",), True)
LOSS = Figure("NLL (test loss)", ("loss",), True)
COVERAGE = Figure("coverage (share answered sure)", ("coverage",), None)
SURE_ACCURACY = Figure("accuracy of the sure answers", ("sure_accuracy",), False)
PHOTO_SURE = Figure("photo-like garments answered sure", ("photo_sure",), False)
TEST_FIGURES = (ECE, LOSS, COVERAGE, SURE_ACCURACY, PHOTO_SURE)  # the report's table's order
RECORDED = (PHOTO_SURE,)  # no per-image data: metrics/test.json's figure, compared without an interval


def auroc_figure(name: str) -> Figure:
    """How well the unsure score tells a not-garment set from the test images."""
    return Figure(f"{name}: AUROC", ("not_garments", name, "auroc"), False)


def unsure_figure(name: str) -> Figure:
    """The share of a not-garment set answered unsure."""
    return Figure(f"{name}: answered unsure", ("not_garments", name, "unsure"), False)


def per_image_figures(sets: Sequence[str]) -> list[Figure]:
    """The figures of `per_image`'s columns, in order."""
    return [ECE, LOSS, COVERAGE, SURE_ACCURACY, *map(unsure_figure, sets), *map(auroc_figure, sets)]


def per_image(test: SplitAnswers, unsure: Unsure, sets: Sequence[str]) -> stats.Statistic:
    """The figures that have per-image data, as one statistic of resamples of the test images (sample 0) and of
    each set of `sets` (sample 1 + k), in the order of per_image_figures: ECE, the negative log-likelihood,
    coverage, accuracy of the sure answers, each set's share answered unsure, then each set's AUROC against the test
    images."""
    # read_unsure returns None otherwise
    assert test.confidence is not None and test.actual_probability is not None
    assert test.unsure is not None and test.unsure_score is not None
    sure = ~test.unsure
    columns = [
        stats.weighted_ece(test.confidence, test.right),
        stats.weighted_mean(-np.log(np.clip(test.actual_probability, 1e-12, 1.0))),
        stats.weighted_mean(sure),
        stats.weighted_ratio(test.right & sure, sure),
        *(stats.weighted_mean(unsure.not_garments[name][1], sample=k) for k, name in enumerate(sets, start=1)),
    ]
    if sets:
        outsides = [unsure.not_garments[name][0] for name in sets]
        columns.append(stats.weighted_aurocs(test.unsure_score, outsides, 0, range(1, len(sets) + 1)))
    return stats.stacked(*columns)


def sizes(test: SplitAnswers, unsure: Unsure, sets: Sequence[str]) -> list[int]:
    """The images of each sample of `per_image`: the test images, then each set's."""
    return [len(test.actual), *(len(unsure.not_garments[name][0]) for name in sets)]


def set_values(test: SplitAnswers, unsure: Unsure) -> dict[str, dict[str, float]]:
    """{set: {"unsure": share, "auroc": AUROC}} of one run, computed as the report computes them: what `fmnist
    seeds` records of each run, so that their spread is that of what is compared."""
    sets = list(unsure.not_garments)
    values = stats.on_samples(per_image(test, unsure, sets), sizes(test, unsure, sets))
    found: dict[str, dict[str, float]] = {name: {} for name in sets}
    for figure, number_found in zip(per_image_figures(sets), values, strict=True):
        if figure.seed_path[0] == "not_garments":
            found[figure.seed_path[1]][figure.seed_path[2]] = float(number_found)
    return found
