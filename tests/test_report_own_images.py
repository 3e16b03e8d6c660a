"""The report's own-images comparison: both models answer through the Predictor, as evaluate answers (the pure
Markdown and verdict are tested in test_own_data.py)."""

from pathlib import Path

import numpy as np
import pytest

from fmnist.lib import answers
from fmnist.lib.files import load_split
from fmnist.tools import report_own_images
from tests.helpers import git_commit, run


@pytest.mark.slow
def test_the_base_and_the_workspace_answer_each_image_as_evaluate_did(pipeline_copy, tmp_path, monkeypatch):
    git_commit(pipeline_copy, "first run")  # the base: this very model, fetched from the DVC cache
    commit = run(["git", "rev-parse", "HEAD"], pipeline_copy).stdout.strip()
    monkeypatch.chdir(pipeline_copy)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fetched-models"))
    test = load_split("test")  # stands in for own held-out images: evaluate recorded its answers to them
    base_right, head_right = report_own_images.right_answers(test, "HEAD", commit)
    recorded = answers.read(lambda path: Path(path).read_text() if Path(path).is_file() else None, "test")
    assert recorded is not None and recorded.unsure is not None  # evaluate's answers, calibrated
    assert np.array_equal(base_right, recorded.right) and np.array_equal(head_right, recorded.right)
