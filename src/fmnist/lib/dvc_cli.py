"""DVC's command line, run from Python: the one place that knows how (this environment's DVC, `python -m dvc`)."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fmnist.lib.process import PipelineError


class DvcError(PipelineError):
    """A dvc command failed; the message names the command and DVC's last error line."""


def dvc(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    echo: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `dvc ARGS` and return it, stdout and stderr captured as text.

    `env` is added to this process's environment, and this Python's directory goes first on PATH: the stages'
    commands (`python -m fmnist.stages...` in dvc.yaml) then run in this environment, as they would in an
    activated venv, even when `fmnist` was started by its full path. With `echo`, DVC's progress messages go
    straight to our stderr (a long command shows what it is doing) and only stdout is captured. With `check`, a
    failure raises DvcError.
    """
    environment = {**os.environ, **(env or {})}
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", os.defpath)])
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=None if echo else subprocess.PIPE,
        text=True,
    )
    if check and result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines() or [f"exit status {result.returncode}"]
        shown = "see DVC's message above" if echo else lines[-1].removeprefix("ERROR: ")
        raise DvcError(f"`dvc {' '.join(args)}` failed: {shown}")
    return result
