"""fmnist.lib.process: nothing happens at import; a process sets TensorFlow's defaults first and keeps its start-up
notices off stderr on every CPU kind, but not its errors; one-line errors stand alone (other packages' warnings stay
off stderr, ours and the user's -W choice do not); the watchdog; free ports. The machine: test_process_machine.py."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist.lib import process

SRC = Path(__file__).resolve().parents[1] / "src"
ONEDNN_NOTICE = "oneDNN custom operations are on"
NO_PARAMS = "error: params.yaml not found; run the stages from the repository root\n"
CPU_KINDS = {  # how TensorFlow's oneDNN is set up on each kind of CPU
    "onednn_on": {"TF_ENABLE_ONEDNN_OPTS": "1"},  # the default on AVX512-VNNI/BF16 and AMX CPUs
    "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"},  # TensorFlow's default on AVX2-only CPUs (fmnist sets 1)
    "onednn_avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def python(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python ARGS` with `env` over a clean TensorFlow environment; output as text."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ONEDNN_", "DNNL_"))}
    return subprocess.run([sys.executable, *args], env={**base, **(env or {})}, cwd=cwd, capture_output=True, text=True)


# asyncssh (dvc-ssh's) warns at import with the locked cryptography: "CryptographyDeprecationWarning: DSA is
# deprecated". The check is that this line, printed above every error of an SSH remote, is gone.
WARNINGS_SCRIPT = """
import warnings
from fmnist.lib.process import hide_dependency_warnings
hide_dependency_warnings()
import asyncssh
warnings.warn_explicit("ours", UserWarning, "cli.py", 1, module="fmnist.cli")
"""
IMPORT_EVERYTHING_LIGHT = """
import os, psutil
before = dict(os.environ)
import fmnist, fmnist.cli, fmnist.stages.__main__, fmnist.lib.process, fmnist.tools.report
print(dict(os.environ) == before, psutil.Process().children())
"""


def test_importing_the_package_changes_no_environment_variable_and_starts_no_process():
    assert python("-c", IMPORT_EVERYTHING_LIGHT).stdout == "True []\n"


def test_configure_sets_the_defaults_and_a_users_own_settings_win():
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    process.configure(env)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.parametrize("env", CPU_KINDS.values(), ids=CPU_KINDS)
def test_a_stage_that_fails_prints_its_one_line_and_nothing_else(env, tmp_path):
    result = python("-m", "fmnist.stages", "evaluate", env=env, cwd=tmp_path)  # imports TensorFlow, then fails
    assert (result.returncode, result.stderr) == (
        1,
        "error: params.yaml not found; run the stages from the repository root\n",
    )


def test_tf_cpp_min_log_level_0_shows_every_start_up_line(tmp_path):
    result = python("-m", "fmnist.stages", "evaluate", env={"TF_CPP_MIN_LOG_LEVEL": "0"}, cwd=tmp_path)
    assert result.stderr.count(ONEDNN_NOTICE) == 2  # once per shared library: what the filter has to catch
    assert result.stderr.endswith(NO_PARAMS)


@pytest.mark.parametrize("flags", [(), ("-W", "default")], ids=["unset", "W-default"])
def test_only_our_own_warnings_reach_stderr_unless_the_user_asks_for_all(flags):
    unfiltered = python("-c", "import asyncssh")
    assert "CryptographyDeprecationWarning" in unfiltered.stderr  # the locked versions do warn

    result = python(*flags, "-c", WARNINGS_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert ("CryptographyDeprecationWarning" in result.stderr) == bool(flags)
    assert "UserWarning: ours" in result.stderr


def test_an_error_printed_while_tensorflow_loads_still_shows_even_if_the_process_dies(tmp_path):
    fake = tmp_path / "tensorflow"  # a stand-in that logs as TensorFlow does, then crashes
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1795788500.905407   23088 port.cc:153] a notice\\n')\n"
        "os.write(2, b'E0000 00:00:1795788500.905407   23088 cpu_check.cc:1] this CPU lacks AVX\\n')\n"
        "os.abort()\n"
    )
    code = (
        "from fmnist.lib import process\nprocess.configure()\nwith process.quiet_tensorflow():\n    import tensorflow"
    )
    result = python("-c", code, env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{SRC}"})
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
        [*process.SCRIPT, "filter", str(level)],
        input="".join(lines + other),
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [line for line in lines if line[0] in kept] + other[1:]
    assert result.stdout.splitlines(keepends=True) == expected


def test_the_watchdog_kills_a_block_that_overruns_within_its_bound():
    code = (
        "import time\nfrom fmnist.lib.process import killed_unless_done_within\n"
        "print('entering', flush=True)\n"
        "with killed_unless_done_within(1, 'the peer never came'):\n    time.sleep(50)\n"
        "print('finished')"
    )
    overrun = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert overrun.stdout.readline() == "entering\n"
        entered = time.monotonic()
        stdout, stderr = overrun.communicate(timeout=60)
    finally:
        overrun.kill()
    assert time.monotonic() - entered < 15  # the 1 s bound, and the watchdog's own start on a busy machine
    assert overrun.returncode == -9 and stderr.strip() == "error: the peer never came"
    assert "finished" not in stdout


def test_the_watchdog_spares_a_block_that_finishes_in_time(capfd):
    with process.killed_unless_done_within(30, "the peer never came"):  # a failure would kill the test run itself
        time.sleep(0.1)
    assert capfd.readouterr().err == ""


def test_killed_unless_done_within_lets_exceptions_through():
    with pytest.raises(ValueError), process.killed_unless_done_within(30, "unused"):
        raise ValueError


def test_free_ports_are_distinct_and_free():
    ports = process.free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:  # nothing listens: each can be bound again
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
