"""bench/loadtest.py, the load test: its statistics and request mix, and one short real run against `fmnist serve`."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bench.loadtest import Outcome, payloads, summarize, table
from fmnist.nn.model import build_model, save_model
from tests.helpers import REPO_ROOT, TINY_MODEL


def answered(status: int | None, ms: float, good: bool = True) -> Outcome:
    """A request sent at time 0 that got `status` after `ms` milliseconds."""
    return Outcome(good=good, status=status, started=0.0, seconds=ms / 1000)


def test_summary_counts_errors_good_failures_and_bad_requests_without_a_4xx():
    outcomes = [
        *(answered(200, ms) for ms in range(100, 0, -1)),  # 100 .. 1 ms, unsorted on purpose
        answered(503, 1),  # a good request refused: a failure
        answered(None, 30_000),  # unanswered: a failure, and not in the latencies
        answered(415, 2, good=False),  # as it should be
        answered(200, 2, good=False),  # a bad request accepted
        answered(503, 2, good=False),  # a bad request that got no 4xx
    ]
    summary = summarize(outcomes, clients=4, seconds=2.0)
    assert (summary.requests, summary.per_second) == (105, 52.5)
    # Nearest rank: latencies some request had, not interpolated between two (50.5 and 99.01 ms).
    assert (summary.p50_ms, summary.p99_ms) == (50.0, 99.0)
    assert summary.errors == {"415": 1, "503": 2, "no answer": 1}
    assert (summary.good_failed, summary.bad_not_4xx) == (2, 2)
    row = table([summary]).splitlines()[2]
    assert row == "| 4 | 2 | 105 | 52 | 50.0 | 99.0 | 415: 1, 503: 2, no answer: 1 | 2 | 2 |"


def test_the_percentiles_of_a_few_latencies_and_of_none():
    three = summarize([answered(200, ms) for ms in (3, 1, 2)], clients=1, seconds=1.0)
    assert (three.p50_ms, three.p99_ms) == (2.0, 3.0)
    refused = summarize([answered(503, 1)], clients=1, seconds=1.0)  # no good request answered: no latency
    assert math.isnan(refused.p50_ms) and math.isnan(refused.p99_ms) and refused.good_failed == 1


def test_the_request_mix_has_the_bad_fraction_and_every_kind_of_bad_request(garments):
    images = garments["t10k-images-idx3-ubyte"][:20]
    mix = [next(requests) for requests in [payloads(images, 0.1)] for _ in range(200)]
    bad = [p for p in mix if not p.good]
    assert len(bad) == 20 and all(not mix[i].good for i in range(9, 200, 10))
    assert len({p.body for p in bad}) == 4  # not an image, truncated, empty, blank
    assert all(p.body[:2] == b"\xff\xd8" and p.content_type == "image/jpeg" for p in mix if p.good)  # JPEGs
    assert len({p.body for p in mix if p.good}) == 20


@pytest.mark.slow
def test_a_short_real_run_fails_no_good_request_and_refuses_every_bad_one(tmp_path):
    """`fmnist serve` with a tiny model in two workers, 4 clients for 2 s (plus start-up and warm-up: about 20 s)."""
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "tiny.keras")
    command = [sys.executable, "-m", "bench.loadtest", "--model", "tiny.keras", "--clients", "4"]
    result = subprocess.run(
        [*command, "--seconds", "2", "--tta", "none", "--no-in-process", "--out", "report.md", "--", "--workers", "2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # bench/ is run from the repository, never installed
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
    # The server's figures add up its worker processes: gunicorn's master alone would use next to no CPU.
    server_cores = float(columns["CPU cores used: server / clients / other processes"].split(" / ")[0])
    assert server_cores > 0.2
