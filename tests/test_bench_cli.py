"""bench/cli.py, the harnesses' shared command line: help from the harness's docstring, --out, the command as typed,
and a harness run as a process (`python -m bench.NAME`): its report printed and written, a user's error one line."""

import subprocess
import sys

from bench import cli
from tests.helpers import REPO_ROOT

DOC = """What a harness measures, in one line.

    python -m bench.example [--count N]

How it measures it.
"""


def test_the_parser_takes_its_help_from_the_docstring_and_has_out(tmp_path):
    parser = cli.parser("bench.example", DOC)
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args(["--out", str(tmp_path / "r.md"), "--count", "5"])
    assert (args.out, args.count) == (tmp_path / "r.md", 5)
    assert parser.format_help().startswith("usage: python -m bench.example [-h] [--out OUT] [--count COUNT]")
    assert "What a harness measures, in one line." in parser.format_help()
    assert "    python -m bench.example [--count N]\n\nHow it measures it." in parser.format_help()  # as written
    assert cli.typed(parser, ["--out", "a b.md"]) == "python -m bench.example --out 'a b.md'"


def test_the_report_is_printed_and_written_where_asked(tmp_path, capsys):
    cli.publish("| a | b |", tmp_path / "report.md")
    cli.publish("| c | d |", None)
    assert capsys.readouterr().out == "| a | b |\n| c | d |\n"
    assert (tmp_path / "report.md").read_text() == "| a | b |\n"


def test_a_harness_fails_with_one_line_and_the_users_fix(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.training", "--presets", "reference"],
        cwd=tmp_path,  # no data/prepared here
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (
        1,
        "error: data/prepared is missing; run `dvc repro prepare` first\n",
    )
