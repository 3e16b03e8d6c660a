"""fmnist.tools.loadtest: its statistics and request mix, and one short real run against `fmnist serve`."""

import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from fmnist.nn.model import build_model, save_model
from fmnist.tools.loadtest import Outcome, descendants, payloads, percentile, process_tree, summarize, table
from tests.helpers import TINY_MODEL


def test_percentile_is_the_nearest_rank():
    hundred = list(range(100, 0, -1))  # 100 .. 1, unsorted on purpose
    assert (percentile(hundred, 50), percentile(hundred, 99), percentile(hundred, 100)) == (50, 99, 100)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([3.0, 1.0, 2.0], 1) == 1.0
    assert percentile([7.5], 99) == 7.5
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        percentile([1.0], 0)


def test_summary_counts_errors_good_failures_and_bad_requests_without_a_4xx():
    outcomes = [
        *(Outcome(good=True, status=200, seconds=s / 1000) for s in range(1, 101)),  # 1 .. 100 ms
        Outcome(good=True, status=503, seconds=0.001),  # a good request refused: a failure
        Outcome(good=True, status=None, seconds=30.0),  # unanswered: a failure, and not in the latencies
        Outcome(good=False, status=415, seconds=0.002),  # as it should be
        Outcome(good=False, status=200, seconds=0.002),  # a bad request accepted
        Outcome(good=False, status=503, seconds=0.002),  # a bad request that got no 4xx
    ]
    summary = summarize(outcomes, clients=4, seconds=2.0)
    assert (summary.requests, summary.per_second) == (105, 52.5)
    assert (summary.p50_ms, summary.p99_ms) == pytest.approx((50.0, 99.0))
    assert summary.errors == {"415": 1, "503": 2, "no answer": 1}
    assert (summary.good_failed, summary.bad_not_4xx) == (2, 2)
    row = table([summary]).splitlines()[2]
    assert row == "| 4 | 2 | 105 | 52 | 50.0 | 99.0 | 415: 1, 503: 2, no answer: 1 | 2 | 2 |"


def test_the_request_mix_has_the_bad_fraction_and_every_kind_of_bad_request(garments):
    images = garments["t10k-images-idx3-ubyte"][:20]
    mix = [next(requests) for requests in [payloads(images, 0.1)] for _ in range(200)]
    bad = [p for p in mix if not p.good]
    assert len(bad) == 20 and all(not mix[i].good for i in range(9, 200, 10))
    assert len({p.body for p in bad}) == 4  # not an image, truncated, empty, blank
    assert all(p.body[:2] == b"\xff\xd8" and p.content_type == "image/jpeg" for p in mix if p.good)  # JPEGs
    assert len({p.body for p in mix if p.good}) == 20


def test_descendants_are_children_and_their_children_and_nothing_else():
    parent_of = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}  # 10 -> (11 -> 13, 12); 20 -> 21 beside it
    assert descendants(10, parent_of) == [10, 11, 13, 12]
    assert descendants(13, parent_of) == [13] and descendants(99, parent_of) == [99]


@pytest.mark.slow  # /proc: Linux only, like the load test itself (the fast tests also run on macOS)
def test_the_servers_processes_are_it_and_its_descendants():
    # A parent whose child has a child of its own, beside an unrelated process: the tree is the first three.
    script = "import subprocess, sys, time; c = [sys.executable, '-c', 'import time; time.sleep(30)']; "
    script += "subprocess.Popen([sys.executable, '-c', f'import subprocess; subprocess.Popen({c!r}).wait()']); "
    script += "time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", script]) as parent, subprocess.Popen(["sleep", "30"]) as other:
        try:
            deadline = time.monotonic() + 20
            while len(tree := process_tree(parent.pid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(tree) == 3 and tree[0] == parent.pid and other.pid not in tree
        finally:
            for pid in reversed(process_tree(parent.pid)):
                os.kill(pid, signal.SIGKILL)
            other.kill()


@pytest.mark.slow
def test_a_short_real_run_fails_no_good_request_and_refuses_every_bad_one(tmp_path):
    """`fmnist serve` with a tiny model, 4 clients for 2 s (plus start-up and warm-up: about 15 s)."""
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "tiny.keras")
    command = [sys.executable, "-m", "fmnist.cli", "loadtest", "--model", "tiny.keras", "--clients", "4"]
    result = subprocess.run(
        [*command, "--seconds", "2", "--tta", "none", "--no-in-process", "--out", "report.md"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # 1 if a good request failed or a bad one got no 4xx
    head, _, row = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    columns = dict(zip(head.strip("| ").split(" | "), row.strip("| ").split(" | "), strict=True))
    assert columns["clients"] == "4" and int(columns["requests"]) > 0
    assert (columns["good failed"], columns["bad not 4xx"]) == ("0", "0")
    assert {"400", "415", "422"} <= {part.split(":")[0] for part in columns["errors by status"].split(", ")}
    assert "Machine: " in result.stdout and (tmp_path / "report.md").read_text() == result.stdout
    assert np.isfinite(float(columns["p99 ms"]))
