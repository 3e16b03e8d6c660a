"""Charts for the report's Markdown, as Mermaid `xychart-beta` blocks: GitHub draws them in a pull request's
comment with no image host (Mermaid 10.5 and newer).

xychart-beta has no legend and draws several bar series on top of each other, so each chart shows one bar
series (a difference) or lines, says in its title which line is which, and stands beside the table of its numbers.
Pure: numbers in, Markdown out.
"""

from collections.abc import Sequence


def label(text: str) -> str:
    """`text` as a quoted Mermaid label. A Mermaid string cannot hold a double quote or brackets, which would end
    it or the list it is in: those become single quotes and parentheses."""
    cleaned = text.replace('"', "'").replace("[", "(").replace("]", ")")
    return f'"{cleaned}"'


def number_list(values: Sequence[float], digits: int) -> str:
    """[0.9123, 0.8012, ...] with `digits` decimals."""
    return "[" + ", ".join(f"{value:.{digits}f}" for value in values) + "]"


def axis_range(values: Sequence[float], digits: int, include_zero: bool = False) -> str:
    """`low --> high`, a little wider than the values (and spanning 0 if asked), rounded to `digits` decimals."""
    low, high = min(values), max(values)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    margin = max((high - low) * 0.1, 10.0**-digits)
    return f"{low - margin:.{digits}f} --> {high + margin:.{digits}f}"


def bar_chart(title: str, categories: Sequence[str], values: Sequence[float], y_title: str, digits: int = 4) -> str:
    """A fenced Mermaid block: one bar per category; the y axis spans zero, so a negative bar points down."""
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f"    title {label(title)}",
            f"    x-axis [{', '.join(label(c) for c in categories)}]",
            f"    y-axis {label(y_title)} {axis_range(values, digits, include_zero=True)}",
            f"    bar {number_list(values, digits)}",
            "```",
        ]
    )


def line_chart(
    title: str, x_labels: Sequence[str], lines: Sequence[Sequence[float]], y_title: str, digits: int = 4
) -> str:
    """A fenced Mermaid block: one line per series, over the same x labels (a shorter series ends early)."""
    longest = max(len(values) for values in lines)
    everything = [value for values in lines for value in values]
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f"    title {label(title)}",
            f"    x-axis [{', '.join(label(x) for x in x_labels[:longest])}]",
            f"    y-axis {label(y_title)} {axis_range(everything, digits)}",
            *(f"    line {number_list(values, digits)}" for values in lines),
            "```",
        ]
    )
