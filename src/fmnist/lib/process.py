"""Processes: what each of this project's processes sets up before TensorFlow loads, the watchdog process that ends
a wait nothing else can end, and free ports for the servers it starts. Importing this module does nothing.

Set-up, called first by the `fmnist` command and by `python -m fmnist.stages STAGE` (dvc.yaml's commands):
- oneDNN's kernels on every x86 CPU (TF_ENABLE_ONEDNN_OPTS=1), not only where TensorFlow turns them on by itself
  (AVX512-VNNI/BF16, AMX): on an AVX2-only CPU they train the default network faster than Eigen's
  (docs/results.md). Kernels change the numbers, so dvc.yaml lists this file as a dependency of the stages that
  run TensorFlow. A user's own TF_ENABLE_ONEDNN_OPTS (0: Eigen) wins.
- TensorFlow's INFO and WARNING lines hidden (TF_CPP_MIN_LOG_LEVEL=2, unless set), so that they do not open
  every stage's output and every one-line error; its errors still show.
- Its start-up notices too. Where oneDNN is on, `import tensorflow` prints, once from each of two of its shared
  libraries:

      WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
      I0000 00:00:1795788500.905407   23088 port.cc:153] oneDNN custom operations are on. You may see ...

  Abseil's C++ logging writes them while the libraries load, straight to file descriptor 2, until a program calls
  absl::InitializeLog(), which Python programs never do. No public setting reaches it (TF_CPP_MIN_LOG_LEVEL is
  read by TensorFlow's own logger only; checked with TensorFlow 2.21), so `quiet_tensorflow` makes file descriptor
  2 a pipe into a filter process (this file, run as a script) that drops Abseil's lines below
  TF_CPP_MIN_LOG_LEVEL and passes everything else on. A separate process, so that an error printed just before a
  crash (an illegal instruction, an abort) still reaches the terminal. TF_CPP_MIN_LOG_LEVEL=0 shows everything.

The watchdog (`killed_unless_done_within`) is this file run as a script too: joining a TensorFlow cluster blocks
in C++ holding Python's GIL, so a watchdog thread would never run, and SIGTERM is not acted on
(fmnist.nn.distribute).
"""

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, MutableMapping

SCRIPT = [sys.executable, "-I", "-S", os.path.abspath(__file__)]  # this file as a script: stdlib only, fast to start

# --- This process's start ---------------------------------------------------------------------------------------

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1", LEVEL_VARIABLE: "2"}  # set where the user has not set them
ABSEIL_LINE = re.compile(rb"([IWE])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")  # I0000 00:00:1795788500.905407   23088 x.cc:1]
ABSEIL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def configure(env: MutableMapping[str, str] = os.environ) -> None:
    """Set TensorFlow's kernel and log-level defaults in `env` (this process's environment) where unset."""
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)


def min_level(env: dict[str, str]) -> int:
    """TF_CPP_MIN_LOG_LEVEL as a number (0 = show everything); a value that is not one counts as 0."""
    try:
        return int(env.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Within the block, Abseil's lines below TF_CPP_MIN_LOG_LEVEL are dropped from file descriptor 2."""
    level = min_level(dict(os.environ))
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        saved = -1
    if level <= 0 or saved < 0:
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    filter_process = subprocess.Popen([*SCRIPT, "filter", str(level)], stdin=read_end, stdout=saved)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the filter reads to the end and exits
        os.close(saved)
        filter_process.wait()


def load_tensorflow() -> None:
    """Import TensorFlow and Keras now, with their start-up notices filtered: what a command that loads them only
    once its arguments are known to be sound calls first."""
    with quiet_tensorflow():
        import keras  # noqa: F401  (it imports TensorFlow)


def filter_lines(level: int, lines: Iterator[bytes]) -> Iterator[bytes]:
    """The lines to keep: all but Abseil's preamble and its lines whose severity (I, W, E: 0, 1, 2) is below
    `level`. Fatal lines (F) always pass."""
    for line in lines:
        match = ABSEIL_LINE.match(line)
        if line.rstrip(b"\r\n") == ABSEIL_PREAMBLE or (match and "IWE".index(match.group(1).decode()) < level):
            continue
        yield line


# --- A watchdog ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def killed_unless_done_within(seconds: float, message: str) -> Iterator[None]:
    """Print `message` and kill this process if the block has not finished after `seconds`.

    Use it only before anything is written: the process ends without unwinding.
    """
    watchdog = subprocess.Popen([*SCRIPT, "watchdog", str(os.getpid()), str(seconds), message], stdin=subprocess.PIPE)
    try:
        yield
    finally:
        assert watchdog.stdin is not None  # stdin=PIPE
        watchdog.stdin.close()  # the watchdog sees end-of-file: the block is over
        watchdog.wait()


def watch(parent: int, seconds: float, message: str) -> None:
    """Wait for stdin to close (the block finished, or the parent ended anyway); past `seconds`, kill `parent`."""
    if not select.select([sys.stdin], [], [], seconds)[0]:
        print(f"error: {message}", file=sys.stderr, flush=True)
        os.kill(parent, signal.SIGKILL)


# --- Free ports ---------------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on now. The kernel picks each; all stay bound until every one
    is chosen, so none repeats (one socket closed before the next is bound may get the same port back)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A port that nothing listens on now."""
    return free_ports(1)[0]


if __name__ == "__main__":  # the filter or the watchdog process
    if sys.argv[1] == "filter":  # stdin to stdout, line by line
        for kept in filter_lines(int(sys.argv[2]), iter(sys.stdin.buffer)):
            sys.stdout.buffer.write(kept)
            sys.stdout.buffer.flush()
    else:
        watch(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
