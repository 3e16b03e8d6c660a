"""fmnist.lib.stats against values computed independently (exact binomial sums, by hand)."""

import math

import numpy as np
import pytest

from fmnist.lib import metrics, stats


@pytest.mark.parametrize(
    ("only_base", "only_head", "p", "mid_p"),
    [
        (170, 123, 0.0071, 0.0060),  # exact binomial tails, doubled (checked against scipy.stats.binomtest)
        (160, 130, 0.088, 0.0785),
        (152, 133, 0.29, 0.26),
        (181, 145, 0.052, 0.046),  # seed 0 against seed 1 of the default on one machine
        (0, 3, 0.25, 0.125),  # 2 * (1/2)^3; mid-p halves the observed split's share
    ],
)
def test_mcnemar_exact_and_mid_p(only_base, only_head, p, mid_p):
    assert stats.mcnemar_p(only_base, only_head) == pytest.approx(p, abs=0.0005 if p < 0.01 else 0.005)
    assert stats.mcnemar_mid_p(only_base, only_head) == pytest.approx(mid_p, abs=0.0005 if mid_p < 0.01 else 0.005)
    assert stats.mcnemar_p(only_head, only_base) == stats.mcnemar_p(only_base, only_head)  # two-sided


def test_mcnemar_without_discordant_images_or_with_an_even_split_finds_nothing():
    assert stats.mcnemar_p(0, 0) == stats.mcnemar_mid_p(0, 0) == 1.0
    assert stats.mcnemar_p(5, 5) == 1.0
    assert stats.mcnemar_mid_p(5, 5) == pytest.approx(1 - math.comb(10, 5) / 2**10)


def test_paired_counts_and_delta():
    base = np.array([1, 1, 0, 0, 1], bool)
    head = np.array([1, 0, 1, 1, 1], bool)
    counts = stats.paired(base, head)
    assert (counts.n, counts.base_correct, counts.head_correct, counts.only_base, counts.only_head) == (5, 3, 4, 1, 2)
    assert counts.delta == pytest.approx(0.2)
    with pytest.raises(ValueError, match="answered"):
        stats.paired(base, head[:4])


def test_bootstrap_interval_covers_the_delta_with_the_width_of_a_paired_standard_error():
    counts = stats.Paired(n=10_000, base_correct=9359, head_correct=9323, only_base=181, only_head=145)
    low, high = stats.bootstrap_interval(counts)
    # The normal approximation: se = sqrt(b + c - (c - b)^2 / n) / n = 0.0018; 95% = ±1.96 se.
    se = math.sqrt(181 + 145 - 36**2 / 10_000) / 10_000
    assert low < counts.delta < high
    assert low == pytest.approx(counts.delta - 1.96 * se, abs=0.0003)
    assert high == pytest.approx(counts.delta + 1.96 * se, abs=0.0003)
    assert stats.bootstrap_interval(counts) == (low, high)  # seeded: the report does not flicker


def test_holm_multiplies_by_the_remaining_count_and_keeps_the_order():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])
    one_of_ten = [0.02] + [0.8] * 9  # p = 0.02 alone among ten tests is no finding
    assert stats.holm(one_of_ten)[0] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("delta", "p", "sd", "word"),
    [
        (0.006, 0.001, 0.0015, "better"),  # significant and beyond 2√2 x 0.0015 = 0.0042
        (-0.006, 0.001, 0.0015, "worse"),
        (-0.0036, 0.052, 0.0018, "within noise"),  # the seed 0 vs seed 1 case: neither criterion
        (-0.0036, 0.03, 0.0018, "within noise"),  # significant on the test set, but seeds alone move it this far
        (0.008, 0.2, 0.0018, "inconclusive"),  # beyond seed noise, but the test set cannot confirm it
        (0.01, 0.001, None, "inconclusive"),  # no seed record: never better or worse
        (0.001, 0.6, None, "within noise"),
    ],
)
def test_the_verdict_needs_the_test_and_the_seed_spread_to_agree(delta, p, sd, word):
    assert stats.verdict(delta, p, sd, base=0.935).word == word


def test_a_seed_spread_that_reaches_chance_level_judges_nothing():
    # Two seeds of an unstable tiny run, 0.4019 and 0.6679: ±0.53 of seed noise. A model at chance level
    # (0.0940, McNemar p = 0) lies within that band, but the band says nothing: it reaches a guessing model.
    unstable = stats.verdict(-0.3079, 0.0, 0.1881, base=0.4019)
    assert unstable.word == "inconclusive" and "chance level" in unstable.reason and unstable.settle
    assert stats.verdict(-0.3079, 0.0, 0.01, base=0.4019).word == "worse"  # seeds that agree: it is worse
    assert stats.verdict(-0.01, 0.3, 0.01, base=0.90).word == "within noise"  # far above chance: the band holds


def test_seed_noise_is_two_sd_of_the_difference_of_two_runs():
    assert stats.seed_noise(0.0018) == pytest.approx(2 * math.sqrt(2) * 0.0018)


def test_spreads_compare_with_welchs_test():
    base = stats.Spread((0.9359, 0.9323, 0.9339, 0.9350, 0.9331))
    assert base.sd == pytest.approx(float(np.std(base.accuracies, ddof=1)))
    same = stats.Spread((0.9345, 0.9330, 0.9352))
    better = stats.Spread((0.9410, 0.9402, 0.9415))
    assert stats.compare_spreads(base, same).word == "within noise"
    assert stats.compare_spreads(base, better).word == "better"
    assert stats.compare_spreads(base, stats.Spread((0.94,))).word == "inconclusive"


# The paired bootstrap of statistics of per-image arrays, against the metrics computed directly.

RNG = np.random.default_rng(7)


def probabilities(n: int) -> np.ndarray:
    """(n, 10) rows of a softmax, some sharp and some flat."""
    logits = RNG.normal(0, 1, (n, 10)) * RNG.uniform(0.5, 6, (n, 1))
    found = np.exp(logits)
    return found / found.sum(axis=1, keepdims=True)


def test_weighted_statistics_of_the_samples_themselves_are_the_plain_metrics():
    probs, labels = probabilities(400), RNG.integers(0, 10, 400)
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    sure = RNG.random(400) < 0.9
    assert stats.on_samples(stats.weighted_ece(confidence, right), [400]) == pytest.approx(
        metrics.ece(probs, labels), abs=1e-6
    )
    assert stats.on_samples(stats.weighted_mean(sure), [400]) == pytest.approx(sure.mean())
    assert stats.on_samples(stats.weighted_ratio(right & sure, sure), [400]) == pytest.approx(right[sure].mean())
    inside = RNG.normal(0, 1, 400).round(1)  # rounded: ties between the samples, which count half
    outsides = [RNG.normal(1, 1, 30).round(1), np.concatenate([RNG.normal(0.5, 1, 20).round(1), [np.inf] * 3])]
    found = stats.on_samples(stats.weighted_aurocs(inside, outsides, 0, (1, 2)), [400, 30, 23])
    assert found == pytest.approx([metrics.auroc(inside, outside) for outside in outsides], abs=1e-6)


def test_the_paired_bootstrap_is_the_quantile_of_the_metrics_on_resampled_images():
    n, m, resamples = 60, 25, 300
    probs, labels = probabilities(n), RNG.integers(0, 10, n)
    other = probabilities(n)  # the head model: other probabilities for the same images
    base_scores, head_scores = RNG.normal(0, 1, n), RNG.normal(0, 1, n)
    outside = RNG.normal(1, 1, m)
    base = stats.stacked(
        stats.weighted_ece(probs.max(axis=1), probs.argmax(axis=1) == labels),
        stats.weighted_aurocs(base_scores, [outside], 0, (1,)),
    )
    head = stats.stacked(
        stats.weighted_ece(other.max(axis=1), other.argmax(axis=1) == labels),
        stats.weighted_aurocs(head_scores, [outside + 0.3], 0, (1,)),
    )
    low, high = stats.paired_bootstrap(base, head, [n, m], resamples=resamples, seed=3)

    # The same resamples as index lists: each image as often as the resample drew it, both models alike.
    deltas = []
    test_counts = np.concatenate(list(stats.resample_counts(n, resamples, (3, 0))))
    set_counts = np.concatenate(list(stats.resample_counts(m, resamples, (3, 1))))
    for test_row, set_row in zip(test_counts, set_counts, strict=True):
        images = np.repeat(np.arange(n), test_row.astype(int))
        drawn = np.repeat(np.arange(m), set_row.astype(int))
        ece = metrics.ece(other[images], labels[images]) - metrics.ece(probs[images], labels[images])
        auroc = metrics.auroc(head_scores[images], outside[drawn] + 0.3) - metrics.auroc(
            base_scores[images], outside[drawn]
        )
        deltas.append((ece, auroc))
    direct_low, direct_high = np.quantile(np.array(deltas), [0.025, 0.975], axis=0)
    assert low == pytest.approx(direct_low, abs=1e-5) and high == pytest.approx(direct_high, abs=1e-5)
    assert (low < high).all()


def test_resamples_draw_every_sample_size_with_replacement_and_repeat_with_their_seed():
    counts = np.concatenate(list(stats.resample_counts(50, 600, 1)))
    assert counts.shape == (600, 50) and (counts.sum(axis=1) == 50).all()
    assert 0.3 < (counts == 0).mean() < 0.44  # each image left out of a resample with probability (1 - 1/50)^50
    assert np.array_equal(counts, np.concatenate(list(stats.resample_counts(50, 600, 1))))


def test_a_paired_bootstrap_of_accuracy_agrees_with_the_counts_bootstrap():
    base_right = RNG.random(10_000) < 0.936
    head_right = np.where(RNG.random(10_000) < 0.97, base_right, ~base_right)  # ~300 images answered otherwise
    low, high = stats.paired_bootstrap(stats.weighted_mean(base_right), stats.weighted_mean(head_right), [10_000])
    expected = stats.bootstrap_interval(stats.paired(base_right, head_right))
    assert (low, high) == pytest.approx(expected, abs=0.0006)  # two Monte Carlo draws of the same interval


@pytest.mark.parametrize(
    ("delta", "interval", "sd", "lower_is_better", "word"),
    [
        (-0.01, (-0.015, -0.005), 0.001, True, "better"),  # ECE down, beyond 2√2 x 0.001 = 0.0028
        (-0.01, (-0.015, -0.005), 0.001, False, "worse"),  # an AUROC down
        (0.01, (0.005, 0.015), 0.001, True, "worse"),
        (0.002, (0.001, 0.003), 0.001, False, "within noise"),  # the interval excludes 0, seeds move it as far
        (0.01, (-0.002, 0.02), 0.001, False, "inconclusive"),  # beyond seed noise, the interval holds 0
        (0.01, (0.005, 0.015), None, False, "inconclusive"),  # no seed spread: never better or worse
        (0.001, (-0.002, 0.004), None, False, "within noise"),
        (0.001, None, 0.001, True, "within noise"),  # no per-image data: seeds alone can say "within noise"
        (0.01, None, 0.001, True, "inconclusive"),  # ... never "better" or "worse"
        (0.0, None, None, True, "inconclusive"),
    ],
)
def test_the_interval_verdict_needs_the_interval_and_the_seed_spread_to_agree(
    delta, interval, sd, lower_is_better, word
):
    assert stats.interval_verdict(delta, interval, sd, lower_is_better).word == word


@pytest.mark.parametrize("sd", [None, 0.001, 0.01])
@pytest.mark.parametrize("interval", [(-0.03, -0.01), (-0.01, 0.01), (0.001, 0.03)])
@pytest.mark.parametrize("delta", [-0.02, -0.002, 0.0, 0.004, 0.02])
def test_with_an_interval_the_rule_is_the_accuracy_verdicts_with_the_interval_as_the_test(delta, interval, sd):
    significant = interval[0] > 0 or interval[1] < 0
    accuracy_rule = stats.verdict(delta, 0.0 if significant else 1.0, sd, base=0.9)  # far above chance
    assert stats.interval_verdict(delta, interval, sd).word == accuracy_rule.word
