"""TensorFlow's start-up notices kept off stderr, without hiding what goes wrong while it loads.

Where oneDNN is on (TensorFlow's default on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX: `IsMklEnabled` in
tensorflow/core/util/port.cc; fmnist turns it on for every x86 CPU), `import tensorflow` prints, once from each of
two of its shared libraries:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795788500.905407   23088 port.cc:153] oneDNN custom operations are on. You may see ...

Those lines come from Abseil's C++ logging while the libraries load. Until a program calls absl::InitializeLog()
(Python programs never do), Abseil writes every message straight to file descriptor 2, and nothing a program can
set from outside reaches it: TF_CPP_MIN_LOG_LEVEL is read by TensorFlow's own logger only (it does hide
cpu_feature_guard's notice), and TF_ENABLE_ONEDNN_OPTS only decides whether oneDNN runs (both checked with
TensorFlow 2.21). So while `tensorflow` is imported, file descriptor 2 is a pipe into a small filter process that
drops Abseil's lines below TF_CPP_MIN_LOG_LEVEL (2 unless set: INFO and WARNING) and passes everything else on. A
separate process, so that an error printed just before a crash (an illegal instruction, an abort) still reaches
the terminal. TF_CPP_MIN_LOG_LEVEL=0 shows everything: the filter is not installed.
"""

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"  # TensorFlow's INFO and WARNING lines hidden, errors shown

# The filter process: copies stdin to stdout line by line, dropping Abseil's preamble and its lines whose severity
# (I, W, E: 0, 1, 2) is below the level given as argv[1]. Fatal lines (F) always pass.
FILTER = r"""
import re, sys
level = int(sys.argv[1])
# I0000 00:00:1795788500.905407   23088 port.cc:153] ...
line_format = re.compile(rb"([IWE])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
preamble = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    match = line_format.match(line)
    if line.rstrip(b"\r\n") == preamble or (match and "IWE".index(match.group(1).decode()) < level):
        continue
    out.write(line)
    out.flush()
"""


def min_level(env: dict[str, str]) -> int:
    """TF_CPP_MIN_LOG_LEVEL as a number (0 = show everything); a value that is not one counts as 0."""
    try:
        return int(env.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def stderr_filtered(level: int) -> Iterator[None]:
    """Send file descriptor 2 through the filter process for the duration of the block."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    filter_process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", FILTER, str(level)], stdin=read_end, stdout=saved
    )
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


class _FilteredImport(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` with stderr filtered; the module keeps the real loader."""

    def __init__(self, loader: importlib.abc.Loader, level: int) -> None:
        self.loader, self.level = loader, level

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with stderr_filtered(self.level):
            self.loader.exec_module(module)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way, once, and wraps its loader in `_FilteredImport`."""

    def __init__(self, level: int) -> None:
        self.level = level

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import to wrap; the other finders do the finding
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredImport(spec.loader, self.level)
        return spec


def hide_import_notices(env: dict[str, str] | None = None) -> None:
    """Filter TensorFlow's start-up lines when it is first imported (from anywhere: keras, dvclive, ...)."""
    env = dict(os.environ if env is None else env)
    level = min_level(env)
    already = any(isinstance(finder, _TensorFlowFinder) for finder in sys.meta_path)
    if level > 0 and "tensorflow" not in sys.modules and not already:
        sys.meta_path.insert(0, _TensorFlowFinder(level))
