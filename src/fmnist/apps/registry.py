"""Registered models: the `fashion-cnn` artifact (dvc.yaml) by version or stage, as GTO's git tags name them.

`fmnist predict --model-stage prod` (or `--model-version v1.0.0`) uses this instead of the workspace file: DVC
finds the commit that the tag names and reads the model from that commit's DVC remote, with no checkout, and
the calibration fitted for it beside it (models/calibration.npz: a commit from before the calibrate stage has
none, and its model cannot answer unsure). The same commit's params.yaml says how that model's numbers were
measured (its `inference` section).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmnist.lib import files
from fmnist.lib.params import InferenceParams, ParamsError, parse_section
from fmnist.lib.process import PipelineError

ARTIFACT = "fashion-cnn"  # the artifact's name in dvc.yaml


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model fetched to this machine."""

    path: Path  # the local copy
    commit: str  # the git commit the version or stage names
    params_text: str | None  # that commit's params.yaml, None if it has none
    named: str  # what the user asked for: "fashion-cnn at stage prod"
    calibrated: bool  # that commit has models/calibration.npz, now beside the local copy


def cache_dir() -> Path:
    """Where fetched models are kept, one per commit: $XDG_CACHE_HOME/fmnist/models (~/.cache/fmnist/models)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fmnist" / "models"


def registered_model(repo: str, version: str | None = None, stage: str | None = None) -> RegisteredModel:
    """The model that `version` or `stage` names in `repo`, downloaded once per commit."""
    import dvc.api  # DVC loads only for a registered model
    from dvc.exceptions import ArtifactNotFoundError, DvcException

    wanted = f"version {version}" if version else f"stage {stage}"
    listing = f"`gto show {ARTIFACT}` lists the registered versions and stages"
    try:
        found = dvc.api.artifacts_show(ARTIFACT, version=version, stage=stage, repo=repo)
    except ArtifactNotFoundError:
        raise PipelineError(f"no {ARTIFACT} model at {wanted} in {repo}; {listing}") from None
    except DvcException as exc:
        raise PipelineError(f"cannot read the registry of {repo} ({' '.join(str(exc).split())}); {listing}") from exc
    return model_at(repo, found["rev"], found["path"], f"{ARTIFACT} at {wanted}")


def model_at(repo: str, commit: str, path: str, named: str) -> RegisteredModel:
    """The model file `path` of `commit` (what the caller calls `named`) in `repo`, and the calibration fitted for
    it if that commit has one, from its DVC cache or remote, downloaded once per commit."""
    import dvc.api  # DVC loads only for a model of another commit

    target = cache_dir() / commit / Path(path).name
    calibration = target.with_name(files.CALIBRATION_FILE.name)  # where load_for looks: beside the model
    if not target.is_file():
        files.write_bytes(target, fetched(repo, commit, path, named, "model"))
    if not calibration.is_file() and tracks(repo, commit, files.CALIBRATION_FILE.as_posix()):
        files.write_bytes(calibration, fetched(repo, commit, files.CALIBRATION_FILE.as_posix(), named, "calibration"))
    try:
        params_text: str | None = dvc.api.read(files.PARAMS_FILE.as_posix(), repo=repo, rev=commit)
    except FileNotFoundError:
        params_text = None
    return RegisteredModel(target, commit, params_text, named, calibration.is_file())


def fetched(repo: str, commit: str, path: str, named: str, what: str) -> bytes:
    """The bytes of `path` at `commit` (`what` the caller calls it) from DVC's cache or remote; a PipelineError
    naming the fix if they cannot be fetched."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.read(path, repo=repo, rev=commit, mode="rb")
    except (DvcException, FileNotFoundError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PipelineError(
            f"{named} is commit {commit[:12]}, but its {what} cannot be fetched ({reason}); "
            "check that commit's DVC remote (`dvc remote list`) and your access to it"
        ) from exc


def tracks(repo: str, commit: str, path: str) -> bool:
    """Whether `commit` of `repo` has `path`, in git or as a DVC output (from its metadata: nothing is fetched)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(repo, rev=commit)
    try:
        return bool(fs.exists(path))
    finally:
        fs.close()


def inference_params(model: RegisteredModel) -> InferenceParams:
    """How the registered model's own pipeline predicted: the `inference` section of its commit's params.yaml."""
    where = f"params.yaml at commit {model.commit[:12]}"
    try:
        raw = yaml.safe_load(model.params_text or "") or {}
        return parse_section(InferenceParams, raw["inference"], "inference")
    except (yaml.YAMLError, KeyError, TypeError, ParamsError):
        raise PipelineError(f"{where} has no valid inference section; pass --tta none or --tta flip") from None
