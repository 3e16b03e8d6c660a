"""`python -m fmnist.stages STAGE`: run one stage of the pipeline, as dvc.yaml's commands do.

The process starts here: TensorFlow's defaults are set (fmnist.lib.process) before the stage's module, and with
it TensorFlow, is imported; then the stage's `main` runs, and an error in it becomes one line and an exit status.
"""

import importlib
import sys

from fmnist.lib import process
from fmnist.lib.process import run_stage

STAGES = (
    "fetch",
    "prepare",
    "not_garments",
    "train",
    "calibrate",
    "evaluate",
    "export",
    "plot_errors",
)  # dvc.yaml's, in its order


def main(argv: list[str]) -> None:
    """Run the stage named in `argv`."""
    if len(argv) != 1 or argv[0] not in STAGES:
        sys.exit(f"usage: python -m fmnist.stages {{{','.join(STAGES)}}}")
    process.configure()
    with process.quiet_tensorflow():  # TensorFlow's start-up notices, printed while the stage's imports load it
        stage = importlib.import_module(f"fmnist.stages.{argv[0]}")
    run_stage(stage.main)


if __name__ == "__main__":
    main(sys.argv[1:])
