"""Every stage leaves a JSON result for machines (CI, the next stage) and Markdown for people.

The Markdown toolkit here is the only one: every stage's renderer builds its tables, escapes its cells
and formats its numbers with it, so a report reads the same in `reports/` and on GitHub.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CELL_LIMIT = 200  # characters of one table cell; longer values are cut


def write_report(reports_dir: Path, stage: str, result: dict[str, Any], markdown: str = "") -> Path:
    """Write `<stage>.json` (and `<stage>.md` when given) under `reports_dir`; return the JSON path."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{stage}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    if markdown:
        (reports_dir / f"{stage}.md").write_text(markdown.rstrip() + "\n")
    return path


def read_report(reports_dir: Path, stage: str) -> dict[str, Any]:
    path = reports_dir / f"{stage}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no {stage} report; run `{stage}` first") from None


def load_reports(reports_dir: Path, stages: Iterable[str]) -> dict[str, Any]:
    """stage -> its JSON report, or None when the file is missing or unreadable."""
    found: dict[str, Any] = {}
    for stage in stages:
        try:
            found[stage] = json.loads((reports_dir / f"{stage}.json").read_text())
        except (OSError, ValueError):
            found[stage] = None
    return found


# Markdown


def markdown_table(header: list[str], rows: list[list[Any]], align: str = "") -> str:
    """A Markdown table; `align` holds one character per column, `r` for right-aligned.

    Cells are written as given: pass values that come from outside (data, URLs, errors) through
    `cell` first.
    """
    marks = ["---:" if kind == "r" else "---" for kind in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(f"{mark}|" for mark in marks)]
    lines += ["| " + " | ".join(str(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: Any, limit: int = CELL_LIMIT) -> str:
    """Text safe inside a Markdown table cell of a report anyone can read.

    Data values come from the pull request (a CSV can hold anything): pipes would break the table, and
    HTML or newlines would change the comment's layout, so they are escaped or flattened, and long values
    are cut.
    """
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def signed(value: float | None, digits: int = 4) -> str:
    """`+0.0123`, `-0.0040`, `0.0000` (no sign when it rounds to zero), `n/a` for None."""
    if value is None:
        return "n/a"
    rounded = round(value, digits)
    if rounded == 0:
        return f"{0:.{digits}f}"
    return f"{rounded:+.{digits}f}"


def number(value: float | None, digits: int = 4) -> str:
    """`0.1235`, or `n/a` for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"
