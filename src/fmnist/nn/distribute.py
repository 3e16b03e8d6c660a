"""Where training runs (`train.distribute`): one device, several local devices, or several machines.

Every choice is a tf.distribute strategy, so the train stage has one training loop for all of them:
- none: TensorFlow's default strategy (one device, no cluster).
- mirrored: tf.distribute.MirroredStrategy over `train.devices` (null: every local GPU, else the CPU). CPU
  devices beyond the first are logical devices carved out of the CPU, which is how it runs without GPUs.
- multi_worker: tf.distribute.MultiWorkerMirroredStrategy over the cluster in $TF_CONFIG, each machine with its
  local GPUs (or its CPU). The same command runs on every machine; only the chief writes files.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from fmnist.lib.errors import PipelineError
from fmnist.lib.params import TrainParams

GUIDE = "docs/scale-out.md, section Training on several devices and machines"


def make_strategy(params: TrainParams) -> tf.distribute.Strategy:
    """The strategy that `params.distribute` names; call it before TensorFlow runs anything."""
    if params.distribute == "none":
        return tf.distribute.get_strategy()
    if params.distribute == "mirrored":
        if params.devices:
            add_logical_cpus(sum("CPU" in name.upper() for name in params.devices))
        return tf.distribute.MirroredStrategy(devices=params.devices)
    return multi_worker_strategy(params.peer_timeout_s)


def add_logical_cpus(count: int) -> None:
    """Split the CPU into `count` logical devices (/cpu:0 ... /cpu:count-1) so MirroredStrategy can use them."""
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def cluster_from_env() -> dict[str, Any]:
    """$TF_CONFIG, checked: {"cluster": {"worker": [host:port, ...], ...}, "task": {"type": ..., "index": ...}}."""
    raw = os.environ.get("TF_CONFIG", "")
    fix = f"set it on every machine as {GUIDE} shows"
    if not raw:
        raise PipelineError(f"train.distribute is multi_worker but TF_CONFIG is not set; {fix}")
    try:
        config = json.loads(raw)
        addresses, index = config["cluster"][config["task"]["type"]], config["task"]["index"]
        if not (isinstance(index, int) and 0 <= index < len(addresses)):
            raise IndexError(f"task index {index!r} is not one of the {len(addresses)} addresses of its type")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PipelineError(f"TF_CONFIG is not a valid cluster and task ({type(exc).__name__}: {exc}); {fix}") from None
    return config


def multi_worker_strategy(peer_timeout_s: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for $TF_CONFIG, failing within `peer_timeout_s` if a worker never joins.

    TensorFlow itself would wait forever at start-up for a worker that never comes (checked here with
    TensorFlow 2.21: still waiting after 13 minutes), so a watchdog ends the process. Once all have joined, a
    worker that dies or stops answering makes the others fail at their next step: TensorFlow's coordination
    service watches every worker's heartbeat (tf.errors.UnavailableError, see `peers_lost_as_error`).
    Collectives get no timeout of their own: with one, TensorFlow 2.21 leaked a thread per all-reduce (about
    40 a step here) until thread creation failed after two epochs.
    """
    config = cluster_from_env()
    task = f"{config['task']['type']} {config['task']['index']}"
    everyone = ", ".join(
        f"{job} {i} at {address}" for job, addresses in config["cluster"].items() for i, address in enumerate(addresses)
    )
    message = (
        f"{task} could not reach every worker in TF_CONFIG ({everyone}) within train.peer_timeout_s = "
        f"{peer_timeout_s:g} s; start the train stage on all of them ({GUIDE})"
    )
    with killed_unless_done_within(peer_timeout_s, message):
        return tf.distribute.MultiWorkerMirroredStrategy()


# The watchdog process: it waits for its stdin to close (the block finished, or the process ended anyway); if
# that takes longer than the given seconds, it prints the message and kills the waiting process.
WATCHDOG = """
import os, select, signal, sys
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def killed_unless_done_within(seconds: float, message: str) -> Iterator[None]:
    """Print `message` and kill this process if the block has not finished after `seconds`.

    For waits inside TensorFlow that nothing else can end: joining the cluster blocks in C++ holding Python's
    GIL, so a watchdog thread never gets to run and SIGTERM is not acted on; a separate process with SIGKILL is
    what works. Use it only before anything is written: the process ends without unwinding.
    """
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(seconds), message], stdin=subprocess.PIPE
    )
    try:
        yield
    finally:
        assert watchdog.stdin is not None  # stdin=PIPE
        watchdog.stdin.close()  # the watchdog sees end-of-file and exits
        watchdog.wait()


@contextlib.contextmanager
def peers_lost_as_error() -> Iterator[None]:
    """Turn TensorFlow's errors for a lost or silent worker into one clear PipelineError."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as exc:
        first_line = re.sub(r"\{\{.*?\}\}\s*", "", str(exc).strip()).splitlines()[0]  # without TF's op name
        raise PipelineError(
            f"lost contact with another worker ({type(exc).__name__}: {first_line}); every worker "
            "must run to the end: restart the train stage on all of them"
        ) from None


def local_cluster(count: int) -> list[dict[str, Any]]:
    """TF_CONFIG values for `count` workers on this machine, on ports that were free a moment ago (tests, bench)."""
    ports = []
    for _ in range(count):
        with socket.socket() as probe:  # the OS picks a free port; closed again, it stays free for a while
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(count)]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: the `chief` task, else worker 0; always true without a cluster."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().jobs:
        return True
    if "chief" in resolver.cluster_spec().jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0
