"""What the repository records about training runs, and reading those records at any git revision.

- metrics/train/metrics.json, key `environment`: where the committed run ran (fmnist.lib.process).
- metrics/seeds.json: the same params trained with several seeds (`fmnist seeds`): how far results move by chance.

Both are committed with the code, so the report can read them at the base of a pull request without any remote.
"""

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from fmnist.lib import files
from fmnist.lib.stats import Spread

# The stages whose code and params decide the test figures (accuracy, calibration, unsure answers): what `fmnist
# seeds` reruns per seed, and what its fingerprint hashes.
SEED_RECORD_STAGES = ("train", "calibrate", "evaluate")


def workspace_commit() -> str | None:
    """The commit checked out here, "+changes" appended if tracked files differ; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def committed_text(path: Path, rev: str = "HEAD") -> str | None:
    """The text of `path` as committed at `rev`, None where git, the revision or the file is missing."""
    try:
        result = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True, text=True)
    except OSError:
        return None
    return result.stdout if result.returncode == 0 else None


def json_or_none(text: str | None) -> Any:
    """Parsed JSON, None for missing or invalid text."""
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def environment_of(train_metrics: Any) -> dict[str, Any] | None:
    """The `environment` recorded in a metrics/train/metrics.json (parsed), None if it has none."""
    found = train_metrics.get("environment") if isinstance(train_metrics, dict) else None
    return found if isinstance(found, dict) else None


def differences(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """ "key committed → current" for every key whose value differs (keys missing on one side included)."""
    keys = list(committed) + [key for key in current if key not in committed]
    return [
        f"{key} {committed.get(key, '?')} → {current.get(key, '?')}"
        for key in keys
        if committed.get(key) != current.get(key)
    ]


def number(value: Any) -> float | None:
    """A JSON number as a float, None for anything else (true and false included)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def split_figures(parsed: Any, split: str) -> dict[str, Any]:
    """The figures of a parsed metrics/test.json or metrics/val.json: its keys, or those under `split` ("test",
    "val") in a file of a commit that nested them so; {} for anything else."""
    if isinstance(parsed, dict) and isinstance(parsed.get(split), dict):
        return dict(parsed[split])
    return dict(parsed) if isinstance(parsed, dict) else {}


def test_accuracy(test_metrics: Any) -> float | None:
    """The accuracy of a metrics/test.json (parsed), None if it has none."""
    return number(split_figures(test_metrics, "test").get("accuracy"))


def val_accuracy(val_metrics: Any) -> float | None:
    """The accuracy of a metrics/val.json (parsed), None if it has none."""
    return number(split_figures(val_metrics, "val").get("accuracy"))


def fingerprint(lock_text: str | None) -> str | None:
    """A hash of what decides the test figures but the seed: the code and params of SEED_RECORD_STAGES.

    Read from dvc.lock (the md5 of every source file, the params values), so a seed record made for other code
    or params shows up as stale. None without a dvc.lock that has all of those stages.
    """
    try:
        stages = yaml.safe_load(lock_text or "")["stages"]
        parts = []
        for name in SEED_RECORD_STAGES:
            stage = stages[name]
            code = {d["path"]: d.get("md5") for d in stage.get("deps", []) if d["path"].startswith("src/")}
            params = json.loads(json.dumps(stage.get("params", {}).get(files.PARAMS_FILE.as_posix(), {})))
            params.get("train", {}).pop("seed", None)
            parts.append({"stage": name, "code": code, "params": params})
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def seed_spread(record: Any, *path: str) -> Spread | None:
    """One figure of every run of a metrics/seeds.json (parsed), at `path` in each run's record: the test accuracy
    by default, ("val_accuracy",) the validation one, ("ece",), ("not_garments", "digits", "auroc"), ... None where
    the record, or one of its runs, has none (a record made before that figure was recorded)."""
    try:
        values = []
        for run in record["seeds"]["runs"]:
            for key in path or ("accuracy",):
                run = run[key]
            values.append(float(run))
    except (KeyError, TypeError, ValueError):
        return None
    return Spread(tuple(values)) if values else None


def seed_sd(record: Any, *path: str) -> float | None:
    """The seed standard deviation of the figure at `path` (see seed_spread), None without 2 runs that record it."""
    spread = seed_spread(record, *path)
    return spread.sd if spread is not None and len(spread.accuracies) > 1 else None


def class_spreads(record: Any) -> dict[str, Spread]:
    """{class name: Spread of its recall over the seeds} from a metrics/seeds.json (parsed); {} if it has none."""
    try:
        runs = record["seeds"]["runs"]
        names = list(runs[0]["recall"])
        return {name: Spread(tuple(float(run["recall"][name]) for run in runs)) for name in names}
    except (KeyError, TypeError, ValueError, IndexError):
        return {}


def output_md5(lock_text: str | None, stage: str, path: Path) -> str | None:
    """The MD5 that dvc.lock records for output `path` of `stage`, None where it records none."""
    try:
        outs = yaml.safe_load(lock_text or "")["stages"][stage]["outs"]
        return next(str(out["md5"]) for out in outs if out["path"] == path.as_posix())
    except (yaml.YAMLError, KeyError, TypeError, StopIteration):
        return None
