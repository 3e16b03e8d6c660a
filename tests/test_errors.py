"""One-line errors stand alone: other packages' warnings stay off stderr, ours and the user's -W choice do not."""

import subprocess
import sys

import pytest

# asyncssh (dvc-ssh's) warns at import with the locked cryptography: "CryptographyDeprecationWarning: DSA is
# deprecated". The check is that this line, printed above every error of an SSH remote, is gone.
SCRIPT = """
import warnings
from fmnist.lib.errors import hide_dependency_warnings
hide_dependency_warnings()
import asyncssh
warnings.warn_explicit("ours", UserWarning, "cli.py", 1, module="fmnist.cli")
"""


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True)


@pytest.mark.parametrize("flags", [(), ("-W", "default")], ids=["unset", "W-default"])
def test_only_our_own_warnings_reach_stderr_unless_the_user_asks_for_all(flags):
    unfiltered = python("-c", "import asyncssh")
    assert "CryptographyDeprecationWarning" in unfiltered.stderr  # the locked versions do warn

    result = python(*flags, "-c", SCRIPT)
    assert result.returncode == 0, result.stderr
    assert ("CryptographyDeprecationWarning" in result.stderr) == bool(flags)
    assert "UserWarning: ours" in result.stderr
