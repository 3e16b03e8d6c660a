"""The command line every harness shares: `python -m bench.NAME` with its module's docstring as its help and
--out, the command as typed (a report's last line says how it was measured), and the start and end of its process
as the `fmnist` command has them."""

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fmnist.lib.process import configure, run_stage


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of the harness `module` ("bench.NAME"): its docstring's first line as the description, the
    rest as the epilog, and --out."""
    description, _, epilog = (doc or "").partition("\n")
    found = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    found.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    return found


def typed(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The command line as it was typed, `python -m bench.NAME ARG ...`."""
    return shlex.join([*parser.prog.split(), *argv])


def publish(text: str, out: Path | None) -> None:
    """Print the report, and write it to `out` too if given."""
    print(text)
    if out:
        out.write_text(text + "\n")


def run(main: Callable[[list[str]], int]) -> None:
    """Run a harness's `main` on this process's arguments as `fmnist` runs a verb: TensorFlow's defaults set before
    anything loads it, a user's error one line and an exit status."""
    configure()
    run_stage(lambda: sys.exit(main(sys.argv[1:])))
