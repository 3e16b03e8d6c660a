"""bench/unsure_methods.py: the rule that picks the unsure score, and the whole table on the tiny pipeline."""

import re
import sys

import pytest

from bench.unsure_methods import MIN_ACCURACY_GAIN, MIN_PHOTOS_SURE, Measured, table
from fmnist.lib import files
from tests.helpers import REPO_ROOT, run


def candidate(name: str, worst: float, gain: float = 0.02, photos: float = 0.9) -> Measured:
    return Measured(name, {"digits": worst, "flat": 1.0}, 0.90 + gain, photos)


def chosen(text: str) -> list[str]:
    return [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.endswith("| yes |")]


def test_the_rule_takes_the_best_worst_set_among_the_candidates_that_clear_both_floors():
    found = [
        candidate("too few photos sure", 0.99, photos=MIN_PHOTOS_SURE - 0.01),
        candidate("too small a gain", 0.98, gain=MIN_ACCURACY_GAIN - 0.001),
        candidate("weaker", 0.90),
        candidate("stronger", 0.95),
    ]
    assert chosen(table(found, 0.90, ["digits", "flat"])) == ["stronger"]
    assert chosen(table(found[:2], 0.90, ["digits", "flat"])) == []  # none clears the floors: none is chosen


@pytest.mark.slow
def test_every_candidate_is_measured_on_every_choose_set_of_the_pipeline(reproduced_repo):
    env = {"PYTHONPATH": f"{reproduced_repo / 'src'}:{REPO_ROOT}"}
    text = run([sys.executable, "-m", "bench.unsure_methods"], reproduced_repo, env=env).stdout
    sets = sorted(path.stem for path in (reproduced_repo / files.NOT_GARMENTS_DIR / "choose").glob("*.npy"))
    header, _, *rows = text.split("\n\n")[0].splitlines()
    assert header.split(" | ")[1 : 1 + len(sets)] == sets
    assert len(rows) == 5 and rows[-1].startswith("| energy + statistics (the pipeline's) |")
    for row in rows:
        aurocs = [float(cell) for cell in row.split(" | ")[1 : 2 + len(sets)]]  # each set's, then the worst
        assert all(0 <= value <= 1 for value in aurocs) and aurocs[-1] == min(aurocs[:-1]), row
    assert len(chosen(text)) <= 1
    assert re.search(r"Validation accuracy 0\.\d{4}; each score answers 95% of the validation images sure", text)
