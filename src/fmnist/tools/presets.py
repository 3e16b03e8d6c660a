"""`fmnist preset NAME`: a preset (presets/NAME.yaml, partial params laid over params.yaml) as `dvc exp run -S` flags.

    dvc exp run -n fast $(fmnist preset fast)

`ls presets/` lists them; each file says in its first comment what it is for.
"""

import argparse
from typing import Any

import yaml

from fmnist.lib import files
from fmnist.lib.params import flatten
from fmnist.lib.presets import load_preset


def overrides_as_flags(overrides: dict[str, Any]) -> list[str]:
    """`{"train": {"epochs": 5}}` -> ["-S", "train.epochs=5"] (values as YAML scalars, which DVC parses)."""
    return [flag for key, value in flatten(overrides).items() for flag in ("-S", f"{key}={flow_yaml(value)}")]


def flow_yaml(value: Any) -> str:
    """`value` as one word of YAML: lists without spaces ([1,1,1]), so that `$(fmnist preset NAME)` splits right."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(flow_yaml(item) for item in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The argument of `fmnist preset`."""
    parser.add_argument("name", help=f"a file in {files.PRESETS_DIR}/, without .yaml (fast, reference, mirrored, ...)")


def run(args: argparse.Namespace) -> int:
    """Print the preset as `-S key=value` flags."""
    print(" ".join(overrides_as_flags(load_preset(args.name))))
    return 0
