"""bench/other_photos.py: every sample photo that scikit-image and scikit-learn ship, answered as `fmnist predict`
answers it, on the tiny pipeline's calibrated model."""

import re
import sys

import pytest

from bench.other_photos import SKIMAGE_PHOTOS
from tests.helpers import REPO_ROOT, run

pytestmark = pytest.mark.slow
ANSWER = re.compile(r"refused: .+|unsure \(best guess: .+ \d\.\d\d\)|sure: .+ \d\.\d\d")


def test_every_photo_is_refused_unsure_or_a_sure_garment_and_the_summary_counts_them(reproduced_repo):
    env = {"PYTHONPATH": f"{reproduced_repo / 'src'}:{REPO_ROOT}"}
    text = run([sys.executable, "-m", "bench.other_photos"], reproduced_repo, env=env).stdout
    rows = [line.strip("| ").split(" | ") for line in text.splitlines()[2:] if line.startswith("| ")]
    names = [name for name, _ in rows]
    assert names[: len(SKIMAGE_PHOTOS)] == [f"skimage {name}" for name in SKIMAGE_PHOTOS]
    assert [name.split()[0] for name in names[len(SKIMAGE_PHOTOS) :]] == ["sklearn", "sklearn"]
    assert all(ANSWER.fullmatch(answer) for _, answer in rows), rows
    # The conversion refuses what it cannot cut a garment out of, whatever the model: a photo filled to its edges.
    assert dict(rows)["skimage brick"].startswith("refused: ")
    counts = [sum(answer.startswith(kind) for _, answer in rows) for kind in ("refused", "unsure", "sure")]
    assert text.strip().endswith(f"{len(rows)} photos: {counts[0]} refused, {counts[1]} unsure, {counts[2]} sure.")
