"""bench/photos.py: photo-like JPEGs of test images through `fmnist predict`, against the same images as arrays."""

import sys

import pytest

from tests.helpers import REPO_ROOT, run


@pytest.mark.slow
def test_the_table_gives_both_accuracies_and_the_speeds_of_the_command_it_names(reproduced_repo):
    env = {"PYTHONPATH": f"{reproduced_repo / 'src'}:{REPO_ROOT}"}
    text = run([sys.executable, "-m", "bench.photos", "--count", "20"], reproduced_repo, env=env).stdout
    cells = dict(line.strip("| ").split(" | ") for line in text.splitlines()[2:7])  # {measure: value}
    arrays, photos = (
        float(cells[f"accuracy on {kind}"])
        for kind in ("20 test images as arrays", "the same images as photo-like JPEGs, through `fmnist predict`")
    )
    assert 0 <= arrays <= 1 and 0 <= photos <= 1 and (20 * arrays).is_integer() and (20 * photos).is_integer()
    assert float(cells["`fmnist predict one.jpg` from the shell, start-up included (median of 3)"].split()[0]) > 0
    assert text.strip().endswith("Measured by `python -m bench.photos --count 20`.")
