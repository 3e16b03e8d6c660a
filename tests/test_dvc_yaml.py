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

NOT_STAGE_DATA = {files.PARAMS_FILE}  # read through `params:`, not `deps:`


def stage_source(stage: str) -> ast.Module:
    return ast.parse(module_file(f"fmnist.stages.{stage}").read_text())


def params_read(stage: str) -> list[str]:
    """The params.yaml sections a stage's module reads: attributes of `load_params()`, called directly or through
    the name it is assigned to in the function that calls it."""
    sections = set()
    for function in ast.walk(stage_source(stage)):
        if not isinstance(function, ast.FunctionDef):
            continue
        calls = [
            node
            for node in ast.walk(function)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "load_params"
        ]
        assigned = {
            target.id
            for node in ast.walk(function)
            if isinstance(node, ast.Assign) and node.value in calls
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        sections |= {
            node.attr
            for node in ast.walk(function)
            if isinstance(node, ast.Attribute)
            and (node.value in calls or (isinstance(node.value, ast.Name) and node.value.id in assigned))
        }
    return sorted(sections)


def paths_named(stage: str) -> set[Path]:
    """The paths of fmnist.lib.files that a stage's module names (`files.X`), params.yaml left out."""
    named = {
        getattr(files, node.attr)
        for node in ast.walk(stage_source(stage))
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "files" and node.attr.isupper()
    }
    return {path for path in named if isinstance(path, Path)} - NOT_STAGE_DATA


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
def test_params_data_deps_and_outs_are_what_the_stages_code_names(stage):
    assert STAGES[stage]["params"] == params_read(stage)
    data_deps = {Path(d) for d in STAGES[stage]["deps"] if not d.startswith("src/")}
    outs = {Path(o) for key in ("outs", "metrics", "plots") for o in names(STAGES[stage].get(key, []))}
    declared = data_deps | outs
    named = paths_named(stage)
    # Each path the code names is declared, itself or as a directory above it; each declaration is one it names.
    assert {path for path in named if not (declared & {path, *path.parents})} == set()
    assert {entry for entry in declared if not any(entry in {path, *path.parents} for path in named)} == set()


def test_metrics_and_plot_files_live_in_git_not_the_cache():
    # dvc metrics diff across commits needs them in git (dvc issue 9722).
    for stage in STAGES.values():
        for entry in stage.get("metrics", []) + stage.get("plots", []):
            assert next(iter(entry.values()))["cache"] is False


def test_the_registry_artifact_is_the_train_stages_model_with_its_contract():
    from fmnist.lib.files import CLASS_NAMES, IMAGE_SHAPE

    artifact = PIPELINE["artifacts"]["fashion-cnn"]
    assert artifact["path"] == str(files.MODEL_FILE) and artifact["type"] == "model"
    assert artifact["meta"]["classes"] == list(CLASS_NAMES)  # in output order
    assert artifact["meta"]["input"]["shape"] == [None, *IMAGE_SHAPE]
