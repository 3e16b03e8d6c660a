"""The `fmnist` front door: every tool is a verb, and only the chosen verb's module is imported."""

import subprocess
import sys

import pytest

from fmnist import cli


def test_every_verb_has_help_and_a_module_with_arguments_and_run():
    for name in cli.VERBS:
        parser = cli.parser([name])
        verb_parser = parser._subparsers._group_actions[0].choices[name]  # argparse keeps no public accessor
        assert verb_parser.description and verb_parser.epilog, name  # one line, then the module's usage notes
        assert not verb_parser.description.startswith("`")  # a sentence for the command line, not a docstring


def test_top_level_help_lists_each_verb_in_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in cli.VERBS)


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
