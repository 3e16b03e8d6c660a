"""dvc.yaml says exactly what each stage's code reads and writes: its imports, its params section, its paths."""

import ast
from pathlib import Path

import pytest
import yaml

from fmnist.lib import files
from tests.helpers import REPO_ROOT

PIPELINE = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]
PACKAGE = REPO_ROOT / "src" / "fmnist"

EXPECTED_PARAMS = {  # which params.yaml sections each stage's main reads
    "fetch": ["fetch"],
    "prepare": ["prepare"],
    "not_garments": ["not_garments"],
    "train": ["model", "train"],
    "calibrate": ["inference", "unsure"],
    "evaluate": ["inference"],
    "export": ["export", "inference"],
    "plot_errors": ["plot_errors"],
}
EXPECTED_DATA = {  # (data deps, outs) in terms of fmnist.lib.files
    "fetch": (set(), {files.RAW_DIR}),
    "prepare": ({files.RAW_DIR, files.EXTRA_DIR}, {files.PREPARED_DIR, files.DATA_METRICS_FILE}),
    "not_garments": (set(), {files.NOT_GARMENTS_DIR}),
    "train": (
        {files.PREPARED_DIR},
        {files.MODEL_FILE, files.TRAIN_LOG_DIR / "plots", files.TRAIN_LOG_DIR / "metrics.json"},
    ),
    "calibrate": ({files.MODEL_FILE, files.PREPARED_DIR}, {files.CALIBRATION_FILE, files.CALIBRATION_METRICS_FILE}),
    "evaluate": (
        {files.MODEL_FILE, files.CALIBRATION_FILE, files.PREPARED_DIR, files.NOT_GARMENTS_DIR},
        {
            files.PREDICTIONS_FILE.parent,
            files.VAL_ANSWERS_FILE,
            files.TEST_ANSWERS_FILE,
            files.NOT_GARMENTS_ANSWERS_FILE,
            files.VAL_METRICS_FILE,
            files.TEST_METRICS_FILE,
            files.PER_CLASS_METRICS_FILE,
            files.NOT_GARMENTS_METRICS_FILE,
            files.OWN_TEST_METRICS_FILE,
            files.NOT_GARMENTS_PLOT,
            files.RELIABILITY_PLOT,
            files.RISK_COVERAGE_PLOT,
        },
    ),
    "export": (
        {files.MODEL_FILE, files.CALIBRATION_FILE, files.PREPARED_DIR},
        {files.EXPORT_DIR, files.EXPORT_METRICS_FILE},
    ),
    "plot_errors": (
        {files.PREPARED_DIR, files.PREDICTIONS_FILE.parent, files.TRAIN_PLOTS_DIR},
        {
            files.RANDOM_PREDICTIONS_PLOT,
            files.MISCLASSIFIED_PLOT,
            files.CONFUSED_PAIRS_PLOT,
            files.TRAINING_CURVES_PLOT,
        },
    ),
}


def module_file(module: str) -> Path:
    """src/fmnist/a/b.py for "fmnist.a.b"."""
    return PACKAGE.parent / f"{module.replace('.', '/')}.py"


def fmnist_imports(module: str) -> set[str]:
    """Modules of the fmnist package that `module` imports, transitively (by reading the source).

    Subpackages' __init__.py files hold only a docstring, so they are not dependencies.
    """
    found, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for node in ast.walk(ast.parse(module_file(name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fmnist"):
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                todo += [m for m in submodules if module_file(m).is_file()] or [node.module]
    return found


def names(entries: list) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def uses_tensorflow(modules: set[str]) -> bool:
    """Whether any of `modules` imports TensorFlow or Keras."""
    return any(
        isinstance(node, ast.Import | ast.ImportFrom)
        and any(name.split(".")[0] in ("tensorflow", "keras") for name in import_names(node))
        for module in modules
        for node in ast.walk(ast.parse(module_file(module).read_text()))
    )


def import_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    return [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_exactly_the_imported_modules(stage):
    code_deps = {d for d in STAGES[stage]["deps"] if d.startswith("src/")}
    module = f"fmnist.stages.{stage}"
    imported = fmnist_imports(module)
    # The launcher sets TensorFlow's kernels (oneDNN or Eigen, fmnist.lib.process) before the stage loads it,
    # which changes the numbers of every stage that computes with TensorFlow.
    if uses_tensorflow(imported):
        imported |= fmnist_imports("fmnist.stages.__main__")
    assert code_deps == {module_file(m).relative_to(REPO_ROOT).as_posix() for m in imported}
    assert STAGES[stage]["cmd"] == f"python -m fmnist.stages {stage}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_params_data_deps_and_outs_match_the_code(stage):
    assert STAGES[stage]["params"] == EXPECTED_PARAMS[stage]
    data_deps = {Path(d) for d in STAGES[stage]["deps"] if not d.startswith("src/")}
    outs = {Path(o) for key in ("outs", "metrics", "plots") for o in names(STAGES[stage].get(key, []))}
    assert (data_deps, outs) == EXPECTED_DATA[stage]


def test_metrics_and_plot_files_live_in_git_not_the_cache():
    # dvc metrics diff across commits needs them in git (dvc issue 9722).
    for stage in STAGES.values():
        for entry in stage.get("metrics", []) + stage.get("plots", []):
            assert next(iter(entry.values()))["cache"] is False


def test_the_registry_artifact_is_the_train_stages_model_with_its_contract():
    from fmnist.lib.dataset import CLASS_NAMES, IMAGE_SHAPE

    artifact = PIPELINE["artifacts"]["fashion-cnn"]
    assert artifact["path"] == str(files.MODEL_FILE) and artifact["type"] == "model"
    assert artifact["meta"]["classes"] == list(CLASS_NAMES)  # in output order
    assert artifact["meta"]["input"]["shape"] == [None, *IMAGE_SHAPE]
