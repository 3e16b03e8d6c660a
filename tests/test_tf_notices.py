"""TensorFlow's start-up lines stay off stderr on every CPU kind; its errors do not (fmnist.lib.tf_notices).

TF_ENABLE_ONEDNN_OPTS=1 makes any x86 CPU print the oneDNN notice that CPUs with AVX512_VNNI/BF16 or AMX print by
default, so these tests see that machine's behaviour on every machine.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist.lib.tf_notices import FILTER

SRC = Path(__file__).resolve().parents[1] / "src"
ONEDNN_NOTICE = "oneDNN custom operations are on"
CPU_KINDS = {  # how TensorFlow's oneDNN is set up on each kind of CPU
    "onednn_on": {"TF_ENABLE_ONEDNN_OPTS": "1"},  # the default on AVX512-VNNI/BF16 and AMX CPUs
    "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"},  # TensorFlow's default on AVX2-only CPUs (fmnist sets 1)
    "onednn_avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
USE_TENSORFLOW = "import fmnist, keras, tensorflow as tf; print(int(tf.reduce_sum(tf.ones(3))))"


def python(code: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -c code` with `env` over a clean TensorFlow environment; output as text."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ONEDNN_", "DNNL_"))}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=cwd, capture_output=True, text=True)


IMPORT_FMNIST = (
    "import os, sys, fmnist\n"
    "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'dvc') if m in sys.modules))\n"
    "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['TF_ENABLE_ONEDNN_OPTS'])"
)


def test_importing_the_package_loads_no_tensorflow_and_only_sets_the_default_log_level_and_kernels():
    # Cheap to import (every `fmnist` command and stage does), and a user's own settings win.
    assert python(IMPORT_FMNIST, {}).stdout == "[]\n2 1\n"
    assert python(IMPORT_FMNIST, {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0"}).stdout == "[]\n0 0\n"


@pytest.mark.parametrize("env", CPU_KINDS.values(), ids=CPU_KINDS)
def test_importing_the_package_and_tensorflow_prints_nothing_on_stderr(env):
    result = python(USE_TENSORFLOW, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "3\n", "")


def test_tf_cpp_min_log_level_0_shows_every_start_up_line():
    result = python(USE_TENSORFLOW, {**CPU_KINDS["onednn_on"], "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0
    assert result.stderr.count(ONEDNN_NOTICE) == 2  # once per shared library: what the filter has to catch


def test_a_stage_that_fails_prints_its_one_line_and_nothing_else(tmp_path):
    result = python(
        "import runpy; runpy.run_module('fmnist.stages.evaluate', run_name='__main__')",
        CPU_KINDS["onednn_on"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr == "error: params.yaml not found; run the stages from the repository root\n"


def test_an_error_printed_while_tensorflow_loads_still_shows_even_if_the_process_dies(tmp_path):
    fake = tmp_path / "tensorflow"  # a stand-in that logs as TensorFlow does, then crashes
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1795788500.905407   23088 port.cc:153] a notice\\n')\n"
        "os.write(2, b'E0000 00:00:1795788500.905407   23088 cpu_check.cc:1] this CPU lacks AVX\\n')\n"
        "os.abort()\n"
    )
    result = python("import fmnist, tensorflow", {"PYTHONPATH": f"{tmp_path}{os.pathsep}{SRC}"})
    assert result.returncode != 0
    assert "this CPU lacks AVX" in result.stderr and "a notice" not in result.stderr


@pytest.mark.parametrize(("level", "kept"), [(1, "WEF"), (2, "EF"), (3, "F")])
def test_the_filter_drops_abseil_lines_below_the_level_and_keeps_the_rest(level, kept):
    lines = [f"{s}0000 00:00:1795788500.905407   23088 port.cc:153] {s} line\n" for s in "IWEF"]
    other = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "Traceback (most recent call last):\n",
        "I am not a log line\n",
    ]
    result = subprocess.run(
        [sys.executable, "-c", FILTER, str(level)],
        input="".join(lines + other),
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [line for line in lines if line[0] in kept] + other[1:]
    assert result.stdout.splitlines(keepends=True) == expected
