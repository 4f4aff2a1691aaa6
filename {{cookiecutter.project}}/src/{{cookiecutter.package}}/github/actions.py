"""What a GitHub Actions step writes: step outputs, the job summary, both within GitHub's limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..settings import GitHubContext

COMMENT_LIMIT = (
    65_536  # GitHub refuses longer comment and issue bodies (counted in UTF-16 code units)
)
SUMMARY_LIMIT = 1_000_000  # a step summary may hold 1 MiB; stay below it


def utf16_length(text: str) -> int:
    """Length as GitHub (JavaScript) counts it: characters outside the BMP count twice."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int, note: str) -> str:
    """`text` if it fits in `limit`, else its first whole lines, then `note`, together within `limit`."""
    if utf16_length(text) <= limit:
        return text
    budget = limit - utf16_length(note) - 2
    kept: list[str] = []
    used = 0
    for line in text.splitlines():
        size = utf16_length(line) + 1
        if used + size > budget:
            break
        kept.append(line)
        used += size
    if not kept:  # a single enormous line: cut it by characters
        kept = [text[: max(budget, 0) // 2]]
    return "\n".join(kept) + "\n\n" + note


def _single_line(value: object) -> str:
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a step output cannot hold a line break: {text!r}")
    return text


def write_outputs(values: Mapping[str, object], github: GitHubContext) -> str:
    """Append `key=value` lines to $GITHUB_OUTPUT (None becomes empty); return the lines written."""
    lines = "".join(f"{key}={_single_line(value)}\n" for key, value in values.items())
    if github.output:
        with open(github.output, "a", encoding="utf-8") as out:
            out.write(lines)
    return lines


def append_summary(markdown: str, github: GitHubContext) -> bool:
    """Append to $GITHUB_STEP_SUMMARY; False when not in a GitHub Actions step."""
    if not github.step_summary:
        return False
    body = truncate(markdown, SUMMARY_LIMIT, "_Truncated: the full reports are in `reports/`._")
    with open(github.step_summary, "a", encoding="utf-8") as out:
        out.write(body.rstrip() + "\n\n")
    return True


def warning(title: str, message: str, github: GitHubContext) -> str:
    """A warning line: an annotation on the run's page inside GitHub Actions, plain text elsewhere."""
    return f"::warning title={title}::{message}" if github.actions else f"warning: {message}"


def image_tag(version: object) -> str:
    """The container image's tag for a registered model version; the workflows take it from here."""
    return f"model-v{version}"


def _rollback_outputs(report: Mapping[str, Any]) -> dict[str, object]:
    champion, skipped = report.get("champion"), bool(report.get("skipped"))
    moved = not skipped and champion is not None
    return {
        "champion": champion,
        "skipped": str(skipped).lower(),
        # The image the production tag goes back to; empty when the registry did not move.
        "image_tag": image_tag(champion) if moved else "",
    }


# Report -> the values a later job or step needs from it (`outputs <stage>`).
OUTPUTS: dict[str, Callable[[Mapping[str, Any]], dict[str, object]]] = {
    "train": lambda report: {
        "model_version": report["model_version"],
        "image_tag": image_tag(report["model_version"]),
    },
    "evaluate": lambda report: {
        "decision": report["decision"],
        "candidate_version": report["candidate_version"],
        "champion_version": report.get("champion_version"),
    },
    "build": lambda report: {"bento": report["bento"], "model_version": report["model_version"]},
    "promote": lambda report: {"champion": report["champion"], "previous": report.get("previous")},
    "rollback": _rollback_outputs,
}


def outputs_from(stage: str, report: Mapping[str, Any]) -> dict[str, object]:
    """The values a later job or step needs from one report."""
    if stage not in OUTPUTS:
        raise ValueError(f"no outputs are defined for the {stage} report")
    return OUTPUTS[stage](report)
