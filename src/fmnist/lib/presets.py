"""Named partial params (presets/*.yaml) and how one is laid over params.yaml: what `fmnist preset` prints as
`dvc exp run -S` overrides and what the training bench (`python -m bench.training`) trains side by side."""

from pathlib import Path
from typing import Any

import yaml

from fmnist.lib import files
from fmnist.lib.process import PipelineError


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
