"""Is a difference between two classifiers real? Paired tests on one test set, and the verdict rule of the report.

Two sources of noise decide whether a change in test accuracy means anything (docs/comparing-runs.md):
- the test set: 10,000 images are a sample, so two models that are equally good in general still disagree on a
  few hundred of them. McNemar's test and the paired bootstrap look at exactly those images.
- the run: the same params with another seed (or on another CPU) give another model. McNemar's test knows
  nothing of this (Dietterich 1998), so the seed spread, measured by `fmnist seeds`, enters the verdict too.

The same holds for the figures of calibration and of the unsure answers (ECE, coverage, AUROC against images that
are not garments): a paired bootstrap of any statistic of per-image arrays gives the test set's part, the seed
spread of that figure the run's part (`interval_verdict`).

Pure functions on NumPy arrays and numbers: no files, no TensorFlow.
"""

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fmnist.lib.files import NUM_CLASSES
from fmnist.lib.metrics import ECE_BINS

ALPHA = 0.05  # significance level of every test, after Holm's correction where there are several
BOOTSTRAP_RESAMPLES = 10_000  # enough for a 95% interval stable to about 0.0002 at n = 10,000
# The calibration figures' intervals (paired_bootstrap): each resample is a pass over every image of every sample, so
# fewer of them; 2,000 keep the ends of a 95% interval within about 0.06 standard errors of Δ.
FIGURE_RESAMPLES = 2_000
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


def interval_verdict(
    delta: float, interval: tuple[float, float] | None, seed_sd: float | None, lower_is_better: bool = False
) -> Verdict:
    """`verdict`'s rule for a figure with a paired interval instead of a p-value: better/worse only if the interval
    excludes 0 AND the change beats the seed noise of that figure; `lower_is_better` for an error (ECE, loss).

    Without an interval (no per-image data for the figure), seeds alone can still say that a change is within
    noise, never that it is real: beyond seed noise, or without a seed spread, it is inconclusive. A figure has no
    chance level, so `verdict`'s check for one does not apply.
    """
    significant = interval is not None and (interval[0] > 0 or interval[1] < 0)
    if interval is None:
        shown = "there is no per-image data to test it"
    else:
        shown = f"the 95% interval {'excludes' if significant else 'holds'} 0"
    if seed_sd is None:
        if significant or interval is None:
            joined = "and" if interval is None else "but"
            return Verdict("inconclusive", f"{shown}, {joined} no seed spread is known for the base", settle=True)
        return Verdict("within noise", shown)
    noise = seed_noise(seed_sd)
    if abs(delta) <= noise:
        return Verdict("within noise", f"{shown} and |Δ| ≤ {noise:.4f} (seed noise)", settle=significant)
    if not significant:
        return Verdict("inconclusive", f"|Δ| > {noise:.4f} (seed noise), but {shown}", settle=interval is not None)
    improved = delta < 0 if lower_is_better else delta > 0
    return Verdict("better" if improved else "worse", f"{shown} and |Δ| > {noise:.4f} (seed noise)")


@dataclass(frozen=True)
class Spread:
    """One figure (the test accuracy, mostly) of one set of params over several seeds."""

    accuracies: tuple[float, ...]  # the figure's value in each run

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


# --- A paired bootstrap of any statistic of per-image arrays -------------------------------------------------------
#
# A resample draws n of a sample's n images with replacement. It is held as how often it drew each image, a row of
# counts, so that a statistic of the resample is the statistic of the original arrays weighted by those counts: R
# resamples at once are an (R, n) matrix, and most statistics a matrix product, without copying any array R times.
# Both models are scored on the same resamples (paired), so what the two share cancels out of the difference.

# (R, n_k) counts of each sample k (the test images; the images of one not-garment set; ...) -> (R,) or (R, m)
# values of a statistic (m of them, one per column) on each of the R resamples.
Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]
RESAMPLE_CHUNK = 250  # resamples drawn at a time: (250, 10,000) float32 counts are 10 MB


def resample_counts(
    n: int, resamples: int, seed: int | Sequence[int], chunk: int = RESAMPLE_CHUNK
) -> Iterator[np.ndarray]:
    """The bootstrap's resamples of n images, `chunk` at a time: (chunk, n) float32 counts of each image in each
    resample (each row sums to n). Seeded: the same seed draws the same resamples, whatever statistic they feed."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, (rows, n)) + np.arange(rows)[:, None] * n  # each row's draws in its own range
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float32)


def on_samples(statistic: Statistic, sizes: Sequence[int]) -> np.ndarray:
    """The statistic of the samples themselves (each image drawn once): a float, or (m,) values."""
    return statistic([np.ones((1, n), np.float32) for n in sizes])[0]


def paired_bootstrap(
    base: Statistic,
    head: Statistic,
    sizes: Sequence[int],
    level: float = 0.95,
    resamples: int = FIGURE_RESAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the `level` interval of head's statistic minus base's, over resamples of every sample (of
    `sizes` images each) that score both models at once. Arrays shaped like one value of the statistic.

    Sample k draws from its own stream (seed, k), so the test images are resampled alike for every statistic that
    reads them. A resample where a statistic is undefined (NaN: no sure answer in it) is left out of its interval.
    """
    streams = [resample_counts(n, resamples, (seed, k)) for k, n in enumerate(sizes)]
    deltas = np.concatenate([head(counts) - base(counts) for counts in zip(*streams, strict=True)])
    tail = (1 - level) / 2
    low, high = np.nanquantile(deltas, [tail, 1 - tail], axis=0)
    return low, high


def weighted_ratio(numerator: np.ndarray, denominator: np.ndarray, sample: int = 0) -> Statistic:
    """Sum of the (n,) `numerator` over sum of the (n,) `denominator`, both per image of sample `sample` (a share:
    0/1 arrays); NaN where the denominator sums to 0."""
    both = np.stack([numerator, denominator], axis=1).astype(np.float32)  # (n, 2)

    def statistic(counts: Sequence[np.ndarray]) -> np.ndarray:
        sums = counts[sample] @ both  # (R, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)

    return statistic


def weighted_mean(values: np.ndarray, sample: int = 0) -> Statistic:
    """The mean of (n,) per-image `values` of sample `sample` (a share, for a 0/1 array)."""
    return weighted_ratio(values, np.ones(len(values)), sample)


def weighted_ece(confidence: np.ndarray, right: np.ndarray, bins: int = ECE_BINS, sample: int = 0) -> Statistic:
    """Expected calibration error of (n,) confidences (the predicted class's probability) and (n,) right answers,
    in the equal-width bins of fmnist.lib.metrics.ece: sum over bins of |Σ right - Σ confidence| / n."""
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins] -> k, as there
    gaps = np.zeros((len(confidence), bins), np.float32)  # each image's right - confidence, in its bin's column
    gaps[np.arange(len(confidence)), which] = np.asarray(right, np.float32) - confidence

    def statistic(counts: Sequence[np.ndarray]) -> np.ndarray:
        weights = counts[sample]
        return np.abs(weights @ gaps).sum(axis=1) / weights.sum(axis=1)

    return statistic


def weighted_aurocs(
    inside: np.ndarray, outsides: Sequence[np.ndarray], inside_sample: int = 0, outside_samples: Sequence[int] = (1,)
) -> Statistic:
    """(R, m): for each of the m `outsides` score arrays (sample outside_samples[j]), the probability that one of its
    images scores higher than one of `inside` (sample inside_sample), ties counting half: fmnist.lib.metrics.auroc,
    weighted. Scores may be +inf (above everything), not NaN.

    Each outside image's weight counts the inside images' weight below it (plus half of that at its score): a
    cumulative sum over the inside images sorted by score, shared by the m sets.
    """
    order = np.argsort(inside, kind="stable")
    ranked = inside[order]
    below = [np.searchsorted(ranked, scores, "left") for scores in outsides]  # inside images strictly below
    up_to = [np.searchsorted(ranked, scores, "right") for scores in outsides]  # ... and those tied with it

    def statistic(counts: Sequence[np.ndarray]) -> np.ndarray:
        weights = counts[inside_sample][:, order]
        cumulative = np.concatenate([np.zeros((len(weights), 1), np.float32), np.cumsum(weights, axis=1)], axis=1)
        columns = []
        for left, right, sample in zip(below, up_to, outside_samples, strict=True):
            under = (cumulative[:, left] + cumulative[:, right]) / 2  # (R, m_j): below, plus half of the ties
            outside = counts[sample]
            columns.append((under * outside).sum(axis=1) / (weights.sum(axis=1) * outside.sum(axis=1)))
        return np.stack(columns, axis=1)

    return statistic


def stacked(*statistics: Statistic) -> Statistic:
    """One statistic whose columns are those of `statistics`, in order (each computed on the same resamples)."""

    def statistic(counts: Sequence[np.ndarray]) -> np.ndarray:
        return np.column_stack([found(counts) for found in statistics])

    return statistic
