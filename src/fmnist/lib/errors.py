"""One error type for every problem a user can fix, and the wrapper that turns it into a one-line message."""

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with inputs or params that the user can fix; the message names the problem and the fix."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; a PipelineError becomes `error: <message>` on stderr and exit status 1."""
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; earlier outputs were left as they were", file=sys.stderr)
        sys.exit(130)
