"""The report's charts: Mermaid `xychart-beta` blocks, drawn by Mermaid itself in a real browser (Debian's
Chromium, the locked `mermaid` npm package in .ci/node_modules, no CDN), as GitHub draws them in a comment."""

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from fmnist.lib.answers import SplitAnswers
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.sides import Side
from fmnist.tools import report_charts, report_compare
from tests.helpers import REPO_ROOT

CHROMIUM = Path(os.environ.get("FMNIST_CHROMIUM", "/usr/bin/chromium"))  # Debian's; `make test` installs it
MERMAID = REPO_ROOT / ".ci/node_modules/mermaid/dist/mermaid.min.js"  # `make test-tools`: npm ci --prefix .ci
SVG = "{http://www.w3.org/2000/svg}"


def test_labels_are_quoted_and_cannot_end_their_string_or_list():
    assert report_charts.label('a "quoted" [1]') == "\"a 'quoted' (1)\""
    block = report_charts.bar_chart("Δ", ["x", "y"], [0.5, -0.25], "Δ recall", digits=2)
    assert block.splitlines() == [
        "```mermaid",
        "xychart-beta",
        '    title "Δ"',
        '    x-axis ["x", "y"]',
        '    y-axis "Δ recall" -0.33 --> 0.57',  # spans zero and both values, with a margin
        "    bar [0.50, -0.25]",
        "```",
    ]


def mermaid_blocks(markdown: str) -> list[str]:
    """The code of every ```mermaid block in `markdown`."""
    return re.findall(r"```mermaid\n(.*?)\n```", markdown, re.S)


@pytest.fixture(scope="module")
def draw():
    """A function that draws Mermaid code in Chromium and returns the SVG's root element."""
    from playwright.sync_api import sync_playwright

    for needed, how in ((CHROMIUM, "apt-get install chromium, or set FMNIST_CHROMIUM"), (MERMAID, "make test-tools")):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: {how}")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(MERMAID))
        page.evaluate("mermaid.initialize({startOnLoad: false})")
        count = iter(range(1000))

        def render(code: str) -> ET.Element:
            svg = page.evaluate("async ([id, code]) => (await mermaid.render(id, code)).svg", [f"c{next(count)}", code])
            return ET.fromstring(svg)

        yield render
        browser.close()


def group(svg: ET.Element, css_class: str) -> ET.Element:
    """The <g> of `svg` with class `css_class`."""
    return next(g for g in svg.iter(f"{SVG}g") if g.get("class") == css_class)


def texts(svg: ET.Element) -> list[str]:
    return [t.text for t in svg.iter(f"{SVG}text") if t.text]


def sides_with_curves() -> tuple[Side, Side]:
    """Base and head as the report reads them: 10,000 test answers each, and each one's curve of 3 epochs."""
    actual = np.repeat(np.arange(10), 1000)
    rng = np.random.default_rng(1)
    base_predicted = np.where(rng.random(10_000) < 0.9, actual, (actual + 1) % 10)
    head_predicted = np.where(rng.random(10_000) < 0.92, actual, (actual + 1) % 10)
    base = Side("`main`", SplitAnswers(actual, base_predicted, None, None), None, None, True, (0.80, 0.86, 0.90))
    head = Side("workspace", SplitAnswers(actual, head_predicted, None, None), None, None, True, (0.81, 0.88, 0.92))
    return base, head


@pytest.mark.slow
def test_the_reports_charts_draw_a_bar_per_class_and_a_line_per_side(draw):
    base, head = sides_with_curves()
    markdown = "\n\n".join(body for _, body in report_compare.comparison(base, head).sections)
    recall, curves = mermaid_blocks(markdown)
    bars = list(group(draw(recall), "bar-plot-0").iter(f"{SVG}rect"))
    assert len(bars) == len(CLASS_NAMES) and all(float(bar.get("height", 0)) > 0 for bar in bars)
    assert set(CLASS_NAMES) <= set(texts(draw(recall)))
    lines = draw(curves)
    assert [len(list(group(lines, f"line-plot-{i}").iter(f"{SVG}path"))) for i in (0, 1)] == [1, 1]
    assert {"1", "2", "3"} <= set(texts(lines))


@pytest.mark.slow
def test_a_label_with_quotes_or_brackets_still_draws(draw):
    code = mermaid_blocks(
        report_charts.bar_chart('"odd" [label]', ['say "hi"', "a[1]", "T-shirt/top"], [0.1, -0.2, 0.0], "y")
    )
    svg = draw(code[0])
    assert len(list(group(svg, "bar-plot-0").iter(f"{SVG}rect"))) == 3
    assert {"say 'hi'", "a(1)", "T-shirt/top"} <= set(texts(svg))
