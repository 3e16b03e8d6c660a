"""`fmnist report`'s section on calibration and unsure answers (imported by the report's modules only): does the
workspace's confidence match its accuracy, and does it answer "unsure" where it should, better or worse than the
base's, beyond what the test images and seeds alone move?

Pure: arrays in, Markdown out. What each side recorded, and the figures computed per image from it, are
fmnist.lib.sides'; the statistics are in fmnist.lib.stats, the rule and how to read it in docs/comparing-runs.md.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fmnist.lib import answers, files, runs, stats
from fmnist.lib.sides import (
    COVERAGE,
    RECORDED,
    TEST_FIGURES,
    Figure,
    Side,
    Unsure,
    auroc_figure,
    per_image,
    per_image_figures,
    sizes,
    unsure_figure,
)
from fmnist.tools.report_compare import GUIDE, signed

HEADING = "Calibration and unsure answers"
NO_DATA = "— (no per-image data)"


# Comparing two sides.


@dataclass(frozen=True)
class Row:
    """One figure, base against head."""

    figure: Figure
    base: float | None
    head: float | None
    interval: tuple[float, float] | None  # of head minus base; None without per-image data
    verdict: stats.Verdict | None  # None for a figure without a direction (coverage) or without both values

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.head is None else self.head - self.base


def judged(figure: Figure, base: float | None, head: float | None, interval: Any, seeds: Any) -> Row:
    """A row: the values, the interval (a pair of numbers, or None) and the verdict by stats.interval_verdict
    against the seed spread of that figure in the base's record `seeds`."""
    shown = None if interval is None else (float(interval[0]), float(interval[1]))
    if figure.lower_is_better is None or base is None or head is None:
        return Row(figure, base, head, shown, None)
    sd = runs.seed_sd(seeds, *figure.seed_path)
    return Row(figure, base, head, shown, stats.interval_verdict(head - base, shown, sd, figure.lower_is_better))


def paired_sets(base: Unsure, head: Unsure) -> tuple[list[str], list[str]]:
    """(the not-garment sets both sides answered image for image, those only one did or with other images)."""
    everything = sorted(set(base.not_garments) | set(head.not_garments))
    if base.images is not None and head.images is not None and base.images != head.images:
        return [], everything
    common = [
        name
        for name in base.not_garments
        if name in head.not_garments and len(base.not_garments[name][0]) == len(head.not_garments[name][0])
    ]
    return common, [name for name in everything if name not in common]


def rows(base: Side, head: Side, sets: Sequence[str]) -> list[Row]:
    """Every figure's row, each judged against the base's seed spread: the test split's (TEST_FIGURES), then each
    set's AUROC and share answered unsure."""
    assert base.unsure is not None and head.unsure is not None
    base_statistic = per_image(base.test, base.unsure, sets)
    head_statistic = per_image(head.test, head.unsure, sets)
    samples = sizes(base.test, base.unsure, sets)
    low, high = stats.paired_bootstrap(base_statistic, head_statistic, samples)
    base_values, head_values = stats.on_samples(base_statistic, samples), stats.on_samples(head_statistic, samples)
    found = {
        figure: judged(figure, float(b), float(h), (lo, hi), base.seeds)
        for figure, b, h, lo, hi in zip(per_image_figures(sets), base_values, head_values, low, high, strict=True)
    }
    for figure in RECORDED:
        key = figure.seed_path[0]
        found[figure] = judged(figure, getattr(base.unsure, key), getattr(head.unsure, key), None, base.seeds)
    by_set = [figure for name in sets for figure in (auroc_figure(name), unsure_figure(name))]
    return [found[figure] for figure in (*TEST_FIGURES, *by_set)]


# Markdown.


def value(found: float | None) -> str:
    """A figure with 4 decimals, "—" where it is unknown."""
    return "—" if found is None else f"{found:.4f}"


def coverage_note(base: Unsure, head: Unsure, row: Row) -> str:
    """The coverage row's verdict cell: no better or worse, and how far each side is from its own target."""
    if base.target is None or head.target is None or row.base is None or row.head is None:
        return "none (its target, unsure.coverage, is unknown)"
    target = f"{base.target:g}" if base.target == head.target else f"{base.target:g} → {head.target:g}"
    distances = f"{abs(row.base - base.target):.4f} → {abs(row.head - head.target):.4f}"
    return f"none: near {target} is the goal ({distances} from it)"


def table(base: Side, head: Side, found: Sequence[Row], first: str) -> str:
    """A Markdown table of rows, under a first column named `first`."""
    assert base.unsure is not None and head.unsure is not None
    lines = [f"| {first} | {base.name} | {head.name} | Δ | 95% CI of Δ | verdict |", "|---|---|---|---|---|---|"]
    for row in found:
        delta = "—" if row.delta is None else signed(row.delta)
        interval = NO_DATA if row.interval is None else f"{signed(row.interval[0])} to {signed(row.interval[1])}"
        if row.figure == COVERAGE:
            verdict = coverage_note(base.unsure, head.unsure, row)
        else:
            verdict = "—" if row.verdict is None else row.verdict.word
        lines.append(
            f"| {row.figure.label} | {value(row.base)} | {value(row.head)} | {delta} | {interval} | {verdict} |"
        )
    return "\n".join(lines)


def summary(found: Sequence[Row]) -> str:
    """The section's first line: what moved beyond noise, and how many figures are inconclusive."""
    moved = [
        f"{row.figure.name} {row.verdict.word}" for row in found if row.verdict and row.verdict.word in VERDICT_MOVED
    ]
    undecided = sum(1 for row in found if row.verdict is not None and row.verdict.word == "inconclusive")
    line = f"**Moved beyond noise: {'; '.join(moved)}.**" if moved else "**No figure moved beyond noise.**"
    return line + (f" {undecided} inconclusive (why below)." if undecided else "")


VERDICT_MOVED = ("better", "worse")


def reasons(found: Sequence[Row]) -> str | None:
    """One line per row that is not within noise: its verdict and why; None if there is none."""
    lines = [
        f"- {row.figure.name}: {row.verdict.word}, because {row.verdict.reason}."
        for row in found
        if row.verdict is not None and row.verdict.word != "within noise"
    ]
    return "\n".join(lines) or None


def missing_spreads(base: Side, found: Sequence[Row]) -> str | None:
    """A line naming the judged figures that the base's seed record has no spread for, None if it has them all."""
    missing = [row for row in found if row.verdict and runs.seed_sd(base.seeds, *row.figure.seed_path) is None]
    names = [row.figure.name for row in missing if row.figure.seed_path[0] != "not_garments"]
    if len(names) < len(missing):  # the sets' figures, in a word rather than one name each
        names.append("the not-garment sets' figures")
    if not names:
        return None
    return (
        f"No seed spread at {base.name} ({files.SEEDS_FILE}) for {', '.join(names)}: without it no change of theirs "
        "is called better or worse; `fmnist seeds` there records them."
    )


def notes(base: Side, head: Side, sets: Sequence[str], others: Sequence[str]) -> list[str]:
    """What the tables leave out, and why: sets not compared."""
    assert base.unsure is not None and head.unsure is not None
    found = []
    if sets:
        found.append(
            "Images per set: " + ", ".join(f"{name} {len(base.unsure.not_garments[name][0])}" for name in sets) + "."
        )
    if others:
        found.append(
            f"Not compared, answered by one side only or from other images ({files.NOT_GARMENTS_DIR} in "
            f"{files.DVC_LOCK_FILE}): {', '.join(others)}."
        )
    return found


def section(base: Side, head: Side) -> str:
    """The section's Markdown: both sides' figures, the paired intervals of their differences, the verdicts."""
    without = [side.name for side in (base, head) if side.unsure is None]
    if without:
        return (
            f"_{' and '.join(without)} recorded no unsure answers ({answers.SPLIT_FILES['test']} without confidence "
            f"and unsure columns, or only {answers.LEGACY_FILES['test']}: a commit from before the calibrate stage), "
            "so there is nothing to compare._"
        )
    assert base.unsure is not None and head.unsure is not None
    sets, others = paired_sets(base.unsure, head.unsure)
    found = rows(base, head, sets)
    test_rows, set_rows = found[: len(TEST_FIGURES)], found[len(TEST_FIGURES) :]
    intro = (
        f"Paired, image by image: each of {stats.FIGURE_RESAMPLES:,} bootstrap resamples draws the "
        f"{len(base.test.actual):,} test images, and each not-garment set's images, once for both models. A verdict "
        f"needs the interval to exclude 0 and |Δ| to exceed that figure's seed noise at {base.name}, as the test "
        f"accuracy's does ({GUIDE})."
    )
    parts = [summary(found), intro, table(base, head, test_rows, "test images")]
    if set_rows:
        parts.append(table(base, head, set_rows, "not-garment set"))
    extra = [reasons(found), missing_spreads(base, found)]
    return "\n\n".join(parts + notes(base, head, sets, others) + [part for part in extra if part])
