"""Is a difference between two classifiers real? Paired tests on one test set, and the verdict rule of the report.

Two sources of noise decide whether a change in test accuracy means anything (docs/comparing-runs.md):
- the test set: 10,000 images are a sample, so two models that are equally good in general still disagree on a
  few hundred of them. McNemar's test and the paired bootstrap look at exactly those images.
- the run: the same params with another seed (or on another CPU) give another model. McNemar's test knows
  nothing of this (Dietterich 1998), so the seed spread, measured by `fmnist seeds`, enters the verdict too.

Pure functions on NumPy arrays and numbers: no files, no TensorFlow.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmnist.lib.dataset import NUM_CLASSES

ALPHA = 0.05  # significance level of every test, after Holm's correction where there are several
BOOTSTRAP_RESAMPLES = 10_000  # enough for a 95% interval stable to about 0.0002 at n = 10,000
SEED_NOISE_SIGMAS = 2.0  # a difference counts as larger than seed noise beyond 2 sd of two single runs' difference
CHANCE = 1 / NUM_CLASSES  # the accuracy (and each class's recall) of a model that guesses


@dataclass(frozen=True)
class Paired:
    """Two models' answers on the same images, reduced to what a paired comparison needs."""

    n: int  # images compared
    base_correct: int
    head_correct: int
    only_base: int  # b: images only the base model gets right
    only_head: int  # c: images only the head model gets right

    @property
    def delta(self) -> float:
        """Head's accuracy minus base's (the same as (c - b) / n)."""
        return (self.only_head - self.only_base) / self.n if self.n else 0.0


def paired(base_right: np.ndarray, head_right: np.ndarray) -> Paired:
    """Counts from two (N,) bool arrays: whether each model got each image right."""
    base_right, head_right = np.asarray(base_right, bool), np.asarray(head_right, bool)
    if base_right.shape != head_right.shape:
        raise ValueError(f"the two models answered {base_right.shape} and {head_right.shape} images")
    return Paired(
        n=len(base_right),
        base_correct=int(base_right.sum()),
        head_correct=int(head_right.sum()),
        only_base=int(np.sum(base_right & ~head_right)),
        only_head=int(np.sum(head_right & ~base_right)),
    )


def mcnemar_p(only_base: int, only_head: int) -> float:
    """Exact two-sided McNemar p-value: under "equally good", each discordant image is a fair coin flip."""
    discordant = only_base + only_head
    if discordant == 0:
        return 1.0
    from scipy import stats  # here, not at the top: scipy.stats takes ~1 s to import, and the train stage only
    # needs this module's dataclasses

    return float(stats.binomtest(min(only_base, only_head), discordant, 0.5).pvalue)


def mcnemar_mid_p(only_base: int, only_head: int) -> float:
    """The mid-p variant: the exact p minus the probability of the observed split (less conservative)."""
    discordant = only_base + only_head
    if discordant == 0:
        return 1.0
    from scipy import stats  # (import cost: see mcnemar_p)

    low = min(only_base, only_head)
    if 2 * low == discordant:  # the observed split is the middle one: nothing more extreme but itself
        return 1.0 - float(stats.binom.pmf(low, discordant, 0.5))
    return mcnemar_p(only_base, only_head) - float(stats.binom.pmf(low, discordant, 0.5))


def bootstrap_interval(
    counts: Paired, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Paired bootstrap interval of head's minus base's accuracy, resampling test images (both models at once).

    An image contributes +1 (only head right), -1 (only base right) or 0 to the difference, so a resample of n
    images is a multinomial draw of those three counts: the same distribution as drawing indices, without
    materialising resamples x n of them.
    """
    if counts.n == 0:
        return 0.0, 0.0
    shares = np.array([counts.only_head, counts.only_base, counts.n - counts.only_head - counts.only_base]) / counts.n
    draws = np.random.default_rng(seed).multinomial(counts.n, shares, size=resamples)  # (resamples, 3)
    deltas = (draws[:, 0] - draws[:, 1]) / counts.n
    tail = (1 - level) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, controls the chance of any false "significant" among them)."""
    order = np.argsort(p_values, kind="stable")
    adjusted, running_max = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running_max = max(running_max, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running_max
    return adjusted


def seed_noise(seed_sd: float) -> float:
    """How far two single runs of the same params may differ by chance: 2 sd of a difference of two runs."""
    return SEED_NOISE_SIGMAS * math.sqrt(2) * seed_sd


VERDICTS = ("better", "worse", "within noise", "inconclusive")  # the words of the verdict rule


@dataclass(frozen=True)
class Verdict:
    word: str  # one of VERDICTS
    reason: str  # why, in a few words
    settle: bool = False  # whether more seeds (a seed record for the head) could change the answer


def verdict(delta: float, p_value: float, seed_sd: float | None, base: float, alpha: float = ALPHA) -> Verdict:
    """The report's rule: better/worse only if the paired test is significant AND the change beats seed noise.

    `base` is the base's accuracy (or a class's recall). A change no larger than seeds alone make is within noise,
    even where the two models differ significantly on the test set (two seeds of the same params do too), unless
    seed noise reaches down to chance level: seeds that far apart cannot tell a broken model from a working one,
    so that is inconclusive. A significant change without a seed record, or one beyond seed noise that the test set
    cannot confirm, is inconclusive too.
    """
    significant = p_value < alpha
    shown_p = f"p = {p_value:.2g}"
    if seed_sd is None:
        if significant:
            return Verdict("inconclusive", f"{shown_p}, but no seed spread is known for the base", settle=True)
        return Verdict("within noise", f"{shown_p} ≥ {alpha}")
    noise = seed_noise(seed_sd)
    if abs(delta) <= noise:
        if base - noise <= CHANCE:
            reason = f"seeds alone move it by up to ±{noise:.4f}, down to chance level ({CHANCE:g}): runs this unstable"
            return Verdict("inconclusive", f"{reason} cannot tell a broken model from a working one", settle=True)
        if significant:
            reason = f"|Δ| ≤ {noise:.4f}, what seeds alone move it ({shown_p}: the models differ, as two seeds do)"
            return Verdict("within noise", reason, settle=True)
        return Verdict("within noise", f"{shown_p} ≥ {alpha} and |Δ| ≤ {noise:.4f} (seed noise)")
    if significant:
        return Verdict("better" if delta > 0 else "worse", f"{shown_p} < {alpha} and |Δ| > {noise:.4f} (seed noise)")
    return Verdict("inconclusive", f"|Δ| > {noise:.4f} (seed noise), but {shown_p} ≥ {alpha}", settle=True)


@dataclass(frozen=True)
class Spread:
    """Test accuracies of one set of params over several seeds."""

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def sd(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single run."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def compare_spreads(base: Spread, head: Spread, alpha: float = ALPHA) -> Verdict:
    """Welch's t-test on two seed records: do the params differ on average over seeds?"""
    if len(base.accuracies) < 2 or len(head.accuracies) < 2:
        return Verdict("inconclusive", "each side needs at least 2 seeds")
    delta = head.mean - base.mean
    if base.sd == 0 and head.sd == 0:
        p_value = 1.0 if delta == 0 else 0.0
    else:
        from scipy import stats  # (import cost: see mcnemar_p)

        p_value = float(stats.ttest_ind(head.accuracies, base.accuracies, equal_var=False).pvalue)
    if p_value < alpha:
        return Verdict("better" if delta > 0 else "worse", f"Welch's t-test over seeds: p = {p_value:.2g}")
    return Verdict("within noise", f"Welch's t-test over seeds: p = {p_value:.2g} ≥ {alpha}")
