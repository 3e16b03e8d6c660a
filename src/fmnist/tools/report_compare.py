"""`fmnist report`'s noise-aware part (imported by the report's modules only): is the workspace's model really
better or worse than the base's?

Pure: it takes the two sides the report read (fmnist.lib.sides: per-image answers, environment, seed record) and
returns Markdown. The statistics are in fmnist.lib.stats, the rule and how to read it in docs/comparing-runs.md;
the section on calibration and unsure answers is report_unsure's.
"""

from dataclasses import dataclass

from fmnist.lib import files, runs, stats
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.sides import Side, accuracy_verdict
from fmnist.tools import report_charts

GUIDE = "docs/comparing-runs.md"
SETTLE = (
    f"`fmnist seeds --n 5` here (it writes {files.SEEDS_FILE}; commit it), and the report then compares the two "
    "seed records"
)


def signed(delta: float) -> str:
    """A delta with 4 decimals (one test image in 10,000) and its sign; a rounded zero reads ±0.0000."""
    return "±0.0000" if round(delta, 4) == 0 else f"{delta:+.4f}"


def seed_sd(side: Side) -> float | None:
    """The seed standard deviation of a side's test accuracy, None without a record of 2+ seeds."""
    return runs.seed_sd(side.seeds)


def environment_banner(base: Side, head: Side) -> str | None:
    """A warning when the two models were trained in different environments, None when they were not (or unknown)."""
    if base.environment is None or head.environment is None:
        return None
    changed = runs.differences(base.environment, head.environment)
    if not changed:
        return None
    return (
        f"> **Different environments.** {base.name} and the {head.name} were trained in different environments "
        f"({'; '.join(changed)}), so the difference below mixes the change with the machine. "
        "`fmnist report --retrain-base` retrains the base on this machine for a like-for-like comparison."
    )


def headline(base: Side, head: Side) -> tuple[str, stats.Verdict]:
    """The first lines (both accuracies, the difference with its paired interval, the verdict and why), and the
    verdict; ValueError if the two did not predict the same test images."""
    verdict = accuracy_verdict(base, head)
    counts = stats.paired(base.right, head.right)
    low, high = stats.bootstrap_interval(counts)
    p_value = stats.mcnemar_p(counts.only_base, counts.only_head)
    mid_p = stats.mcnemar_mid_p(counts.only_base, counts.only_head)
    sd = seed_sd(base)
    title = (
        f"**Test accuracy: {base.name} {counts.base_correct / counts.n:.4f} → {head.name} "
        f"{counts.head_correct / counts.n:.4f} ({signed(counts.delta)}; 95% CI {signed(low)} to {signed(high)}): "
        f"{verdict.word}**"
    )
    lines = [
        f"Per test image: {counts.only_base} right only at {base.name}, {counts.only_head} only in the "
        f"{head.name}; McNemar's exact test p = {p_value:.2g} (mid-p {mid_p:.2g}).",
        seed_line(base, sd),
        f"Verdict: {verdict.word}, because {verdict.reason}. How to read this: {GUIDE}.",
    ]
    if verdict.settle:
        lines.append(f"To settle it: {SETTLE}.")
    return title + "\n\n" + "\n".join(f"- {line}" for line in lines), verdict


def seed_line(base: Side, sd: float | None) -> str:
    """What the base's seed record says about chance, or that there is none."""
    if sd is None:
        return (
            f"No seed record at {base.name} ({files.SEEDS_FILE}): how much a change of seed alone moves the "
            "accuracy is unknown, so no change is called better or worse."
        )
    spread = runs.seed_spread(base.seeds)
    assert spread is not None
    stale = "" if base.seeds_current else " (measured for other code or params than the base's: rerun `fmnist seeds`)"
    return (
        f"Seed spread at {base.name}: {spread.mean:.4f} ± {sd:.4f} over {len(spread.accuracies)} seeds"
        f"{stale}; two runs of the same params differ by up to ±{stats.seed_noise(sd):.4f} (2 sd of a difference)."
    )


def per_class_table(base: Side, head: Side) -> str:
    """Each class's recall on both sides, the paired test (Holm-corrected over the ten classes) and its verdict."""
    class_sd = {name: spread.sd for name, spread in runs.class_spreads(base.seeds).items()}
    rows, p_values, deltas = [], [], []
    for index, name in enumerate(CLASS_NAMES):
        mask = base.actual == index
        counts = stats.paired(base.right[mask], head.right[mask])
        rows.append((name, counts))
        p_values.append(stats.mcnemar_p(counts.only_base, counts.only_head))
        deltas.append(counts.delta)
    adjusted = stats.holm(p_values)
    header = [
        f"| class | {base.name} | {head.name} | Δ | only {base.name} | only {head.name} | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines, moved = [], []
    for (name, counts), p_holm, delta in zip(rows, adjusted, deltas, strict=True):
        verdict = stats.verdict(delta, p_holm, class_sd.get(name), counts.base_correct / counts.n)
        lines.append(
            f"| {name} | {counts.base_correct / counts.n:.3f} | {counts.head_correct / counts.n:.3f} | "
            f"{signed(delta)} | {counts.only_base} | {counts.only_head} | {p_holm:.2g} | {verdict.word} |"
        )
        if verdict.word in ("better", "worse"):
            moved.append(name)
    summary = (
        f"Classes that moved beyond noise: {', '.join(moved)}."
        if moved
        else "No class moved beyond noise (recall per class; ten paired tests, Holm-corrected)."
    )
    chart = report_charts.bar_chart(
        f"Recall per class: {plain(head.name)} minus {plain(base.name)}", CLASS_NAMES, deltas, "Δ recall"
    )
    return "\n\n".join([summary, chart, "\n".join(header + lines)])


def plain(name: str) -> str:
    """A side's name without Markdown's backquotes, for a chart's title."""
    return name.replace("`", "")


def curves_section(base: Side, head: Side) -> str | None:
    """Validation accuracy after each epoch, base and head: a chart and its table; None if a side has no curve."""
    if not base.curve or not head.curve:
        return None
    epochs = [str(epoch) for epoch in range(1, max(len(base.curve), len(head.curve)) + 1)]
    title = f"Validation accuracy per epoch: {plain(base.name)} (first line), {plain(head.name)} (second)"
    chart = report_charts.line_chart(title, epochs, [base.curve, head.curve], "accuracy")
    shown = [
        f"| {epoch} | {f'{b:.4f}' if b is not None else '—'} | {f'{h:.4f}' if h is not None else '—'} |"
        for epoch, b, h in zip(epochs, padded(base.curve, len(epochs)), padded(head.curve, len(epochs)), strict=True)
    ]
    table = [f"| epoch | {base.name} | {head.name} |", "|---|---|---|", *shown]
    note = "After each epoch of training, without test-time augmentation (dvclive's `eval/accuracy`)."
    return "\n\n".join([note, chart, "\n".join(table)])


def padded(values: tuple[float, ...], length: int) -> list[float | None]:
    """`values` followed by None up to `length` (a run that stopped early has fewer epochs)."""
    return [*values, *([None] * (length - len(values)))]


def seeds_comparison(base: Side, head: Side) -> str | None:
    """Base's and head's seed records compared (Welch's t-test), when both sides have a current one."""
    base_spread, head_spread = runs.seed_spread(base.seeds), runs.seed_spread(head.seeds)
    if base_spread is None or head_spread is None or not head.seeds_current or base.seeds == head.seeds:
        return None
    verdict = stats.compare_spreads(base_spread, head_spread)
    return (
        f"Over seeds ({files.SEEDS_FILE}): {base.name} {base_spread.mean:.4f} ± {base_spread.sd:.4f} "
        f"(n = {len(base_spread.accuracies)}) → {head.name} {head_spread.mean:.4f} ± {head_spread.sd:.4f} "
        f"(n = {len(head_spread.accuracies)}): {signed(head_spread.mean - base_spread.mean)}, **{verdict.word}** "
        f"({verdict.reason})."
    )


@dataclass(frozen=True)
class Comparison:
    """The report's comparison of two sides."""

    top: str  # the environment banner (if any) and the headline
    sections: list[tuple[str, str]]  # (heading, Markdown)
    verdict: stats.Verdict  # the headline's: on the test accuracy


def comparison(base: Side, head: Side) -> Comparison:
    """The comparison of two sides; ValueError if they did not predict the same test images."""
    text, verdict = headline(base, head)
    top = "\n\n".join(part for part in (environment_banner(base, head), text) if part)
    sections = [("Per class (recall)", per_class_table(base, head))]
    curves = curves_section(base, head)
    if curves:
        sections.append(("Training curves", curves))
    over_seeds = seeds_comparison(base, head)
    if over_seeds:
        sections.insert(0, ("Over seeds", over_seeds))
    return Comparison(top, sections, verdict)
