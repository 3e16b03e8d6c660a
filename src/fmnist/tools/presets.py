"""Named partial params (presets/*.yaml) laid over params.yaml, for the benchmark and for `dvc exp run -S`.

`python -m fmnist.tools.presets fast` prints the preset as DVC overrides:
    dvc exp run -n fast $(python -m fmnist.tools.presets fast)
"""

import sys
from pathlib import Path
from typing import Any

import yaml

from fmnist.lib.errors import PipelineError, run_stage

PRESETS_DIR = Path("presets")


def load_preset(name: str, directory: Path = PRESETS_DIR) -> dict[str, Any]:
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


def overrides_as_flags(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    """`{"train": {"epochs": 5}}` -> ["-S", "train.epochs=5"] (YAML scalars, as DVC parses them)."""
    flags = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            flags += overrides_as_flags(value, f"{prefix}{key}.")
        else:
            flags += [
                "-S",
                f"{prefix}{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",
            ]
    return flags


def main() -> None:
    if len(sys.argv) != 2:
        raise PipelineError("usage: python -m fmnist.tools.presets NAME (a file in presets/)")
    print(" ".join(overrides_as_flags(load_preset(sys.argv[1]))))


if __name__ == "__main__":
    run_stage(main)
