"""How `fmnist serve` holds up under concurrent clients: requests/s, latency, errors and memory, as a Markdown table.

    python -m bench.loadtest [--model models/model.keras] [--clients 1 32] [--seconds 60] [--bad-fraction 0.1]
                             [--tta none|flip|flip_shift] [--out FILE] [-- SERVE_ARG ...]

Starts `fmnist serve` as a child process on a free loopback port (SERVE_ARGs after `--` go to it, e.g.
`-- --workers 2`), then for each client count runs that many clients (asyncio + aiohttp) for SECONDS after a
short warm-up. Each client posts one image per request and waits for the answer: photo-like JPEGs of real test
images (data/prepared, else Debian's copy of the release), and every tenth request (--bad-fraction) a bad one
(not an image, truncated, empty, blank), which must get a 4xx. Latency percentiles are of the good requests.
The table names the machine and how much CPU other processes used meanwhile (they share the cores). Then the
same model predicts the 10,000 test images in process, for the ratio. Exit status 1 if a good request failed
or a bad one got anything but a 4xx. Memory, CPU times and the server's processes come from psutil (Linux, macOS).
"""

import argparse
import asyncio
import dataclasses
import io
import itertools
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import aiohttp
import numpy as np
import psutil
from PIL import Image

from bench import cli
from fmnist.apps.model_choice import TTA_CHOICES, load_predictor, model_file
from fmnist.lib import files
from fmnist.lib.files import DEBIAN_DIR, load_split
from fmnist.lib.idx import parse_idx, read_maybe_gzip
from fmnist.lib.params import TTA
from fmnist.lib.photo import varied_photo
from fmnist.lib.process import PipelineError, cpu_model, free_port

PHOTOS = 500  # distinct good JPEGs, cycled through
WARM_UP_S = 3.0  # before each measured run: connections opened, thread pools and caches warm
START_TIMEOUT_S = 120  # importing TensorFlow and loading the model on a busy 2-core machine
REQUEST_TIMEOUT_S = 30  # a request unanswered after this counts as a failure
# The fields of psutil.cpu_times() that count as busy: all but idle and iowait (Linux has them all, macOS the
# first three; Linux's guest times are already inside user).
BUSY_CPU_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


@dataclass(frozen=True)
class Payload:
    """One request body; `good` ones must get 200, the others a 4xx."""

    body: bytes
    content_type: str
    good: bool


@dataclass(frozen=True)
class Outcome:
    """What one request got: its HTTP status (None: no answer), when it was sent (time.perf_counter) and the
    seconds it took."""

    good: bool
    status: int | None
    started: float
    seconds: float


@dataclass(frozen=True)
class Summary:
    """One run's figures (latencies in ms, of the good requests that got 200)."""

    clients: int
    seconds: float
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # status (or "no answer") -> count, for every answer but 200
    good_failed: int
    bad_not_4xx: int
    extra: dict[str, str] = field(default_factory=dict)  # measured around the run: memory, CPU


def summarize(outcomes: Sequence[Outcome], clients: int, seconds: float) -> Summary:
    """The figures of one run of `clients` clients over `seconds`."""
    latencies = [o.seconds * 1000 for o in outcomes if o.good and o.status == 200]
    # Nearest rank: the smallest latency with at least q% of them at or below it (a latency some request had).
    p50, p99 = np.percentile(latencies, [50, 99], method="inverted_cdf") if latencies else (math.nan, math.nan)
    errors = Counter("no answer" if o.status is None else str(o.status) for o in outcomes if o.status != 200)
    return Summary(
        clients=clients,
        seconds=seconds,
        requests=len(outcomes),
        per_second=len(outcomes) / seconds,
        p50_ms=float(p50),
        p99_ms=float(p99),
        errors=dict(sorted(errors.items())),
        good_failed=sum(o.good and o.status != 200 for o in outcomes),
        bad_not_4xx=sum(not o.good and not (o.status is not None and 400 <= o.status < 500) for o in outcomes),
    )


def table(summaries: Sequence[Summary]) -> str:
    """The runs as a Markdown table, one row each."""
    extra_columns = list(summaries[0].extra) if summaries else []
    head = [
        "clients",
        "seconds",
        "requests",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "errors by status",
        "good failed",
        "bad not 4xx",
        *extra_columns,
    ]
    rows = [
        [
            str(s.clients),
            f"{s.seconds:.0f}",
            str(s.requests),
            f"{s.per_second:.0f}",
            f"{s.p50_ms:.1f}",
            f"{s.p99_ms:.1f}",
            ", ".join(f"{status}: {n}" for status, n in s.errors.items()) or "none",
            str(s.good_failed),
            str(s.bad_not_4xx),
            *(s.extra[c] for c in extra_columns),
        ]
        for s in summaries
    ]
    return "\n".join("| " + " | ".join(row) + " |" for row in [head, ["---"] * len(head), *rows])


def real_test_images() -> np.ndarray:
    """The 10,000 test images (N, 28, 28) uint8: data/prepared if prepared, else Debian's copy of the release."""
    if files.split_files("test")[0].is_file():
        return load_split("test").images[..., 0]
    idx = DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"
    if not idx.is_file():
        raise PipelineError(
            f"no test images: run `dvc repro prepare`, or apt-get install dataset-fashion-mnist ({idx})"
        )
    return parse_idx(read_maybe_gzip(idx))


def bad_bodies(photo: bytes) -> list[Payload]:
    """Requests that must be refused with a 4xx: not an image, a truncated JPEG, an empty body, a blank image."""
    blank = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(blank, format="PNG")
    kinds = [b"this is not an image", photo[: len(photo) // 2], b"", blank.getvalue()]
    return [Payload(body, "application/octet-stream", good=False) for body in kinds]


def payloads(images: np.ndarray, bad_fraction: float) -> Iterator[Payload]:
    """Endless requests: photo-like JPEGs of `images` (sizes and margins varied), with `bad_fraction` bad ones."""
    photos = [Payload(varied_photo(s, i), "image/jpeg", True) for i, s in enumerate(images[:PHOTOS])]
    bad = bad_bodies(photos[0].body)
    for n in itertools.count():
        # Request n is bad when the count of bad ones so far falls behind bad_fraction * n (every 10th for 0.1).
        bad_so_far = math.floor((n + 1) * bad_fraction)
        if bad_so_far > math.floor(n * bad_fraction):
            yield bad[bad_so_far % len(bad)]
        else:
            yield photos[(n - bad_so_far) % len(photos)]  # the good ones in turn: every photo gets sent


async def client(session: aiohttp.ClientSession, url: str, requests: Iterator[Payload], until: float) -> list[Outcome]:
    """One client: a request, wait for the answer, the next, until the event loop's clock passes `until`."""
    loop, outcomes = asyncio.get_running_loop(), []
    while loop.time() < until:
        payload = next(requests)
        start = time.perf_counter()
        try:
            headers = {"Content-Type": payload.content_type}
            async with session.post(url, data=payload.body, headers=headers) as response:
                await response.read()
                status: int | None = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = None
        outcomes.append(Outcome(payload.good, status, start, time.perf_counter() - start))
    return outcomes


async def load(url: str, clients: int, seconds: float, requests: Iterator[Payload]) -> list[Outcome]:
    """`clients` concurrent clients posting to `url` for `seconds`; every request's outcome."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        until = asyncio.get_running_loop().time() + seconds
        runs = await asyncio.gather(*(client(session, url, requests, until) for _ in range(clients)))
    return [outcome for run in runs for outcome in run]


def server_processes(pid: int) -> list[psutil.Process]:
    """Process `pid` and every process descended from it (`fmnist serve`: gunicorn's master and its workers)."""
    server = psutil.Process(pid)
    return [server, *server.children(recursive=True)]


def rss_mb(processes: Sequence[psutil.Process]) -> float:
    """The resident memory of `processes`, added up, in MB."""
    return sum(p.memory_info().rss for p in processes) / 2**20


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds that `processes` have used so far, all their threads, added up."""
    return sum(times.user + times.system for times in (p.cpu_times() for p in processes))


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used, all cores, since boot (idle and iowait excluded)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in BUSY_CPU_FIELDS)


def measure(url: str, server_pid: int, clients: int, seconds: float, requests: Iterator[Payload]) -> Summary:
    """One warmed-up run, with the server's memory and the CPU of the server, this client and everyone else (the
    server: its process and its worker processes)."""
    asyncio.run(load(url, clients, WARM_UP_S, requests))
    server, client = server_processes(server_pid), [psutil.Process()]
    rss_start, machine_start = rss_mb(server), machine_cpu_seconds()
    server_start, client_start = cpu_seconds(server), cpu_seconds(client)
    began = time.monotonic()
    outcomes = asyncio.run(load(url, clients, seconds, requests))
    elapsed = time.monotonic() - began  # a little over `seconds`: the last requests finish
    served, ours = cpu_seconds(server) - server_start, cpu_seconds(client) - client_start
    others = machine_cpu_seconds() - machine_start - served - ours
    rss_end = rss_mb(server)
    extra = {
        "server RSS start → end (MB)": f"{rss_start:.0f} → {rss_end:.0f} ({(rss_end / rss_start - 1) * 100:+.1f}%)",
        "CPU cores used: server / clients / other processes": (
            f"{served / elapsed:.2f} / {ours / elapsed:.2f} / {max(others, 0) / elapsed:.2f}"
        ),
        "server CPU per request (ms)": f"{served / max(len(outcomes), 1) * 1000:.1f}",
    }
    return dataclasses.replace(summarize(outcomes, clients, elapsed), extra=extra)


@contextmanager
def served(model: Path, serve_args: Sequence[str]) -> Iterator[tuple[str, int]]:
    """`fmnist serve` on a free loopback port until the block ends; yields (base URL, its process id)."""
    port = free_port()
    command = [sys.executable, "-m", "fmnist.cli", "serve", "--port", str(port), "--model", str(model), *serve_args]
    with tempfile.TemporaryFile() as log:  # the access log: a line per request, more than a pipe holds
        process = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """Return once `GET /healthz` answers; PipelineError with the server's output if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise PipelineError(f"fmnist serve exited with status {process.returncode}:\n{log.read().decode()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise PipelineError(f"fmnist serve did not answer /healthz within {START_TIMEOUT_S} s")


def in_process_rate(model: Path, tta: TTA | None, images: np.ndarray) -> float:
    """Images per second of the same model and inference params on `images` (N, 28, 28) in one process."""
    predict = load_predictor(model_file(model, tta))
    predict(images[:10, ..., None])  # the first call traces the graph
    start = time.perf_counter()
    predict(images[..., None])
    return len(images) / (time.perf_counter() - start)


def machine() -> str:
    """CPU model, cores, Python and date, for the line above the table."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {date}; load average before the run {load}"
    )


def report(summaries: Sequence[Summary], rate: float | None, where: str, command: str) -> str:
    """The Markdown: the machine, the table, the in-process comparison and the command."""
    lines = [f"Machine: {where}.", "", table(summaries), ""]
    if rate is not None:
        best = max(s.per_second for s in summaries)
        lines += [
            f"In process, the same model predicts 10,000 test images at {rate:,.0f} images/s: the server's best "
            f"{best:.0f} requests/s is {best / rate:.1%} of it.",
            "",
        ]
    return "\n".join([*lines, f"Measured by `{command}`."])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m bench.loadtest`."""
    parser.add_argument("--model", type=Path, default=files.MODEL_FILE, help="default: %(default)s")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32], help="client counts (default: 1 32)")
    parser.add_argument("--seconds", type=float, default=60, help="per client count (default: %(default)s)")
    parser.add_argument("--bad-fraction", type=float, default=0.1, help="bad requests (default: %(default)s)")
    parser.add_argument("--tta", choices=TTA_CHOICES, help="for the server and in process (default: params.yaml's)")
    parser.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the model on 10,000 images in this process (default: yes)",
    )
    parser.add_argument("serve_args", nargs="*", metavar="SERVE_ARG", help="after --: more for fmnist serve")


def main(argv: list[str]) -> int:
    """Serve, load, report; exit status 1 if a good request failed or a bad one got no 4xx."""
    parser = cli.parser("bench.loadtest", __doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.bad_fraction < 1 or min(args.clients) < 1 or args.seconds <= 0:
        raise PipelineError("need 0 <= --bad-fraction < 1, --clients >= 1 and --seconds > 0")
    images, where = real_test_images(), machine()
    tta = ["--tta", args.tta] if args.tta else []
    with served(args.model, [*tta, *args.serve_args]) as (url, pid):
        requests = payloads(images, args.bad_fraction)
        summaries = [measure(f"{url}/predict", pid, n, args.seconds, requests) for n in args.clients]
    rate = in_process_rate(args.model, args.tta, images) if args.in_process else None
    cli.publish(report(summaries, rate, where, cli.typed(parser, argv)), args.out)
    return 1 if any(s.good_failed or s.bad_not_4xx for s in summaries) else 0


if __name__ == "__main__":
    cli.run(main)
