"""Registered models: the `fashion-cnn` artifact (dvc.yaml) by version or stage, as GTO's git tags name them.

`fmnist predict --model-stage prod` (or `--model-version v1.0.0`) uses this instead of the workspace file: DVC
finds the commit that the tag names and reads the model from that commit's DVC remote, with no checkout.
"""

import os
from pathlib import Path

from fmnist.lib import atomic
from fmnist.lib.errors import PipelineError

ARTIFACT = "fashion-cnn"  # the artifact's name in dvc.yaml


def cache_dir() -> Path:
    """Where fetched models are kept, one per commit: $XDG_CACHE_HOME/fmnist/models (~/.cache/fmnist/models)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fmnist" / "models"


def registered_model(repo: str, version: str | None = None, stage: str | None = None) -> Path:
    """The local path of the model that `version` or `stage` names in `repo`, downloaded once per commit."""
    import dvc.api  # DVC loads only for a registered model
    from dvc.exceptions import DvcException

    wanted = f"version {version}" if version else f"stage {stage}"
    try:
        found = dvc.api.artifacts_show(ARTIFACT, version=version, stage=stage, repo=repo)
        target = cache_dir() / found["rev"] / Path(found["path"]).name
        if not target.is_file():
            atomic.write_bytes(target, dvc.api.read(found["path"], repo=repo, rev=found["rev"], mode="rb"))
    except (DvcException, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PipelineError(
            f"no {ARTIFACT} model at {wanted} in {repo}: {reason}; `gto show {ARTIFACT}` lists the "
            "registered versions and stages"
        ) from None
    return target
