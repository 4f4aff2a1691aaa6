"""Every stage leaves a JSON result for machines (CI, the next stage) and Markdown for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
