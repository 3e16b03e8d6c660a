"""`fmnist report`'s section on the user's own held-out images (docs/own-data.md): the base's model and the workspace's
answer the same images, the workspace's data/prepared/own_test_*.npy, and are compared image by image.

The base rarely has those images (they usually arrive with the change under review), so the base's model is
fetched (`dvc.api.read`, from the DVC cache or remote) and run here with its own commit's inference params,
rather than read from the base's committed metrics as the test-set comparison is.
"""

import numpy as np

from fmnist.apps import registry
from fmnist.apps.model_choice import load_predictor, without_calibration
from fmnist.lib import files, stats
from fmnist.lib.files import CLASS_NAMES, Split, load_split
from fmnist.lib.own_data import OWN_TEST_SPLIT
from fmnist.lib.params import load_params
from fmnist.lib.process import PipelineError
from fmnist.tools.report_compare import signed

HEADING = "Your own held-out images"


def right_answers(split: Split, base_rev: str, base_commit: str) -> tuple[np.ndarray, np.ndarray]:
    """(base right (N,) bool, workspace right (N,) bool) on `split`, each model with its own inference params."""
    base = registry.model_at(".", base_commit, files.MODEL_FILE.as_posix(), f"the base `{base_rev}`")
    # Uncalibrated: right or wrong reads only each image's most probable class. TensorFlow loads only here, when
    # there are own images to answer.
    base_predict = load_predictor(without_calibration(base.path, registry.inference_params(base), base_commit))
    head_predict = load_predictor(without_calibration(files.MODEL_FILE, load_params().inference))
    base_answers = base_predict(split.images).probabilities.argmax(axis=1)
    head_answers = head_predict(split.images).probabilities.argmax(axis=1)
    return base_answers == split.labels, head_answers == split.labels


def section(base_rev: str, base_commit: str) -> tuple[str, str] | None:
    """(heading, Markdown) comparing the two models on the workspace's own held-out images; None if it has none."""
    if not files.split_files(OWN_TEST_SPLIT)[0].is_file():
        return None
    split = load_split(OWN_TEST_SPLIT)
    try:
        base_right, head_right = right_answers(split, base_rev, base_commit)
    except PipelineError as exc:
        return HEADING, f"_No comparison: {exc}._"
    return HEADING, markdown(split.labels, base_right, head_right, base_rev)


def fewest_to_decide(alpha: float = stats.ALPHA) -> int:
    """The fewest images that only one model gets right for McNemar's exact test to reach p < alpha (6 at 0.05):
    all of them on one side, p = 2 * 0.5**n."""
    return next(n for n in range(1, 100) if stats.mcnemar_p(0, n) < alpha)


def verdict(counts: stats.Paired) -> stats.Verdict:
    """McNemar's exact test alone (no seed spread is known for own images): better or worse where it is
    significant; inconclusive where too few images differ for it ever to be; else within noise."""
    p_value = stats.mcnemar_p(counts.only_base, counts.only_head)
    differing, needed = counts.only_base + counts.only_head, fewest_to_decide()
    if p_value < stats.ALPHA:
        word = "better" if counts.only_head > counts.only_base else "worse"
        return stats.Verdict(word, f"p = {p_value:.2g} < {stats.ALPHA}, on one training run")
    if differing < needed:
        return stats.Verdict("inconclusive", f"{differing} images differ; the test needs {needed} to decide")
    return stats.Verdict("within noise", f"p = {p_value:.2g} ≥ {stats.ALPHA}")


def markdown(labels: np.ndarray, base_right: np.ndarray, head_right: np.ndarray, base_rev: str) -> str:
    """The verdict line and a per-class table of right answers."""
    counts = stats.paired(base_right, head_right)
    found = verdict(counts)
    delta = (counts.head_correct - counts.base_correct) / counts.n
    lines = [
        f"**{counts.n} images: `{base_rev}` {counts.base_correct} right → workspace {counts.head_correct} right "
        f"({signed(delta)}): {found.word}** ({found.reason})",
        "",
        f"- {counts.only_base} right only at `{base_rev}`, {counts.only_head} only in the workspace (McNemar's exact "
        "test; add held-out images for a firmer answer).",
        "",
        f"| class | images | `{base_rev}` right | workspace right |",
        "|---|---|---|---|",
    ]
    for label in np.unique(labels):
        mask = labels == label
        lines.append(f"| {CLASS_NAMES[label]} | {mask.sum()} | {base_right[mask].sum()} | {head_right[mask].sum()} |")
    return "\n".join(lines)
