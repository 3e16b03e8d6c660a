"""The error type for every problem a user can fix, and the wrapper that turns it into a one-line message."""

import sys
import warnings
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with inputs or params that the user can fix; the message names the problem and the fix."""

    exit_code = 1  # what the process exits with; subclasses may differ


class VerdictRefused(PipelineError):
    """A comparison's verdict is one the caller refuses (`--fail-on`): a gate, not a broken input."""

    exit_code = 3


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C


def hide_dependency_warnings() -> None:
    """Keep other packages' Python warnings off stderr, where a one-line error must stand alone.

    A dependency's deprecation (cryptography's "DSA is deprecated" at every import of asyncssh, say) is for the
    developers of that package, not for a user reading why a command failed. PYTHONWARNINGS or `python -W`, when
    set, decide instead.
    """
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", module=r"(?!fmnist\b)")  # every module outside this package


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's (or a command's) main; a PipelineError becomes `error: <message>` on stderr and its exit code."""
    hide_dependency_warnings()
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; earlier outputs were left as they were", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
