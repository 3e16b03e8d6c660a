"""The `fmnist` command: the tools around the pipeline (the stages themselves run under `dvc repro`; the harnesses
that measure them are bench/'s, `python -m bench.NAME`).

Each verb lives in its own module with `add_arguments(parser)` and `run(args) -> exit status`; only the chosen
verb's module is imported, so `fmnist predict` does not pay for the report's imports.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from fmnist.lib import process
from fmnist.lib.process import hide_dependency_warnings, run_stage

USER_VERBS = {  # verb: (module, what it does, in one line for `fmnist --help`)
    "predict": ("fmnist.apps.predict", "classify image files, directories or stdin with the trained model"),
    "serve": ("fmnist.apps.serve", "a web page and a JSON API that classify uploaded images"),
    "report": ("fmnist.tools.report", "compare the workspace with a base revision, and say if the change is real"),
    "seeds": ("fmnist.tools.seeds", "train the current params with several seeds and record how far results move"),
    "preset": ("fmnist.tools.presets", "print a preset (presets/NAME.yaml) as `dvc exp run -S` overrides"),
    "remote": ("fmnist.tools.remote", "check that a DVC remote answers and takes its credentials; push runs to it"),
}
MAINTAINER_VERBS = {  # the tools that sweep and release this project
    "sweep": ("fmnist.tools.sweep", "run a sweep of DVC experiments across machines, then rank them"),
    "release": (
        "fmnist.tools.release",
        "promote a version unless it is worse; the release workflow's check-assignment, parse-tag, smoke, card",
    ),
}
VERBS = {**USER_VERBS, **MAINTAINER_VERBS}


def overview() -> str:
    """The verbs for `fmnist --help`, users' first, each with its one line."""
    groups = (("use the model, compare runs", USER_VERBS), ("sweep and release", MAINTAINER_VERBS))
    return "\n\n".join(
        f"{title}:\n" + "\n".join(f"  {name:<14}{summary}" for name, (_, summary) in verbs.items())
        for title, verbs in groups
    )


def parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """`fmnist` and its verbs; the verb named in `argv` gets its module's full arguments."""
    top = argparse.ArgumentParser(
        prog="fmnist",
        description="Fashion-MNIST, reproducibly: the tools around the DVC pipeline.",
        epilog=overview(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB", help="one of the verbs below")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, summary) in VERBS.items():
        verb = verbs.add_parser(name, description=summary)
        if name == chosen:
            module = importlib.import_module(module_name)
            verb.formatter_class = argparse.RawDescriptionHelpFormatter
            verb.epilog = (module.__doc__ or "").split("\n", 1)[-1].strip("\n")  # its usage notes, as indented
            module.add_arguments(verb)
            verb.set_defaults(run=module.run)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `fmnist` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    process.configure()  # before any verb loads TensorFlow (each does so with process.load_tensorflow)
    hide_dependency_warnings()  # before the verb's module imports them
    args = parser(argv).parse_args(argv)
    args.command = " ".join(["fmnist", *argv])  # the command line as typed, for tools that print how they ran
    run_stage(lambda: sys.exit(args.run(args)))


if __name__ == "__main__":
    main()
