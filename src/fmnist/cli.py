"""The `fmnist` command: the tools around the pipeline (the stages themselves run under `dvc repro`).

fmnist predict PATH ...     classify images (see `fmnist predict --help`)
fmnist serve                a web page and a JSON API for the same (see `fmnist serve --help`)
fmnist sweep run|collect    a sweep of experiments across machines (see `fmnist sweep --help`)
"""

import argparse
import sys

from fmnist.apps import predict, serve
from fmnist.lib.errors import run_stage
from fmnist.tools import sweep


def parser() -> argparse.ArgumentParser:
    """`fmnist` and its verbs, each with its module's own arguments."""
    top = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST tools: classify, serve, sweep.")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module in (("predict", predict), ("serve", serve), ("sweep", sweep)):
        verb = verbs.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__.splitlines()[0])
        module.add_arguments(verb)
        verb.set_defaults(run=module.run)
    return top


def main() -> None:
    """Entry point of the `fmnist` console script."""
    args = parser().parse_args()
    run_stage(lambda: sys.exit(args.run(args)))


if __name__ == "__main__":
    main()
