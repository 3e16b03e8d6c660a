"""The `fmnist` front door: every tool is a verb, and only the chosen verb's module is imported."""

import subprocess
import sys

import pytest

from fmnist import cli


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_every_verb_explains_itself_and_its_options(verb, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([verb, "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0 and shown.startswith(f"usage: fmnist {verb}")
    summary = cli.VERBS[verb][1]
    assert summary in shown and len(shown.split(summary, 1)[1].strip()) > 100  # then the module's usage notes


def test_top_level_help_lists_the_users_verbs_then_the_maintainers(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0
    lines = {line.split()[0]: number for number, line in enumerate(shown.splitlines()) if line.startswith("  ")}
    assert max(lines[verb] for verb in cli.USER_VERBS) < min(lines[verb] for verb in cli.MAINTAINER_VERBS)


def test_a_light_verb_does_not_import_tensorflow():
    code = "import sys; from fmnist import cli; cli.parser(['report']); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["seeds", "--n", "many"])
    assert done.value.code == 2 and "invalid int value: 'many'" in capsys.readouterr().err


def test_a_verb_sees_the_command_line_it_was_given_not_the_process_argv(monkeypatch):
    seen = {}

    def run(args):
        seen["command"] = args.command
        return 0

    monkeypatch.setattr("fmnist.tools.presets.run", run)  # a light verb; its own work is beside the point
    with pytest.raises(SystemExit) as done:
        cli.main(["preset", "fast"])
    assert done.value.code == 0 and seen["command"] == "fmnist preset fast"
