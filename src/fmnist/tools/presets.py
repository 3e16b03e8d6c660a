"""Named partial params (presets/*.yaml) laid over params.yaml, for the benchmark and for `dvc exp run -S`.

`fmnist preset fast` prints the preset as DVC overrides:
    dvc exp run -n fast $(fmnist preset fast)
"""

import argparse
from pathlib import Path
from typing import Any

import yaml

from fmnist.lib import files
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import flatten


def load_preset(name: str, directory: Path = files.PRESETS_DIR) -> dict[str, Any]:
    """The partial params mapping of presets/<name>.yaml."""
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
        raise PipelineError(f"no preset {name!r} in {directory}/ (known: {known})")
    return yaml.safe_load(path.read_text()) or {}


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: `base` with `overrides` applied at every nesting level."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


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
    parser.add_argument("name", help=f"a file in {files.PRESETS_DIR}/, without .yaml (fast, seed, mirrored, ...)")


def run(args: argparse.Namespace) -> int:
    """Print the preset as `-S key=value` flags."""
    print(" ".join(overrides_as_flags(load_preset(args.name))))
    return 0
