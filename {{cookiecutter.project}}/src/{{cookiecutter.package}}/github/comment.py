"""The pull request comment and the job summaries: the stages' own reports, composed.

Each section is its stage's renderer (`evaluation.markdown`, `validation.markdown`, ...) run on the
stage's JSON report; this module adds the title, the provenance, the links and a clear line for a
report that is missing, then cuts the comment to GitHub's limit behind the hidden marker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_card import REPORT as CARD
from ..reports import cell
from ..settings import GitHubContext
from .actions import COMMENT_LIMIT, truncate, utf16_length

# The first line of the comment: the workflow finds its own comment by it and edits it in place.
MARKER = f"<!-- {__package__.split('.')[0]}:model-report -->"
# Section name (the stage whose report it shows) -> its heading when the report is missing.
SECTIONS = {
    "evaluate": "Model",
    "validate": "Data validation",
    "smoke": "Smoke test",
    "promote": "Promotion",
    "rollback": "Rollback",
    "pipeline": "Pipeline",
    "batch": "Batch scoring",
    "rollout": "Rollout",
}


@dataclass
class Provenance:
    """What a report says about where it comes from; all optional."""

    title: str = "Model report"
    run_url: str | None = None
    artifact_url: str | None = None
    sha: str | None = None
    champion_source: str = ""
    notes: list[str] = field(default_factory=list)


def missing(stage: str, run_url: str | None) -> str:
    where = f"[the run's log]({run_url})" if run_url else "the run's log"
    return f"_No {stage} report: the `{stage}` step did not run or failed before writing it; see {where}._"


def section(
    name: str,
    report: Mapping[str, Any] | None,
    greater_is_better: Mapping[str, bool],
    provenance: Provenance,
) -> str:
    """One stage's report in Markdown, or a line saying it is missing."""
    if report is None:
        return f"### {SECTIONS[name]}\n\n" + missing(name, provenance.run_url)
    # The stage modules import the ML stack (seconds): only the sections asked for load theirs.
    if name == "evaluate":
        from .. import evaluation

        return evaluation.markdown(report, greater_is_better, provenance.champion_source)
    if name == "validate":
        from .. import validation

        return validation.markdown(report)
    if name == "smoke":
        from ..deploy import smoke

        return smoke.markdown(report)
    if name == "rollout":
        from .. import rollout

        return rollout.markdown(report)
    return _SMALL_SECTIONS[name](report)


def pipeline_section(pipeline: Mapping[str, Any]) -> str:
    lines = [
        f"### Pipeline: {pipeline.get('decision', '?')} v{pipeline.get('model_version')}",
        "",
        f"- deployed: {'yes' if pipeline.get('deployed') else 'no'}",
        f"- champion now: {_version(pipeline.get('champion'))}",
    ]
    if pipeline.get("rolled_back"):
        lines.append(f"- **rolled back** after: {cell(pipeline.get('failure'), 500)}")
    return "\n".join(lines)


def promote_section(promote: Mapping[str, Any]) -> str:
    return (
        f"### Promotion: champion is now v{promote.get('champion')}\n\n"
        f"Previous champion: {_version(promote.get('previous'))}."
    )


def rollback_section(rollback: Mapping[str, Any]) -> str:
    if rollback.get("skipped"):
        return f"### Rollback: nothing to do\n\n{cell(rollback.get('why'), 500)}"
    return (
        f"### Rollback: champion is now {_version(rollback.get('champion'))}\n\n"
        f"Rolled back from v{rollback.get('rolled_back_from')}."
    )


def batch_section(batch: Mapping[str, Any]) -> str:
    """This machine's report counts rows; EMR Serverless's names the job run and how it ended."""
    where = f"- input: `{cell(batch.get('input'))}`\n- output: `{cell(batch.get('output'))}`"
    if "job_run_id" not in batch:
        return f"### Batch scoring: {batch.get('rows')} rows with v{batch.get('model_version')}\n\n{where}"
    details = f": {cell(batch['state_details'], 300)}" if batch.get("state_details") else ""
    return (
        f"### Batch scoring on EMR Serverless: {batch.get('state')} with v{batch.get('model_version')}"
        f"\n\n- job run `{cell(batch['job_run_id'])}` of application "
        f"`{cell(batch.get('application_id'))}`, {batch.get('seconds')} s{details}\n{where}\n"
        f"- entry point: `{cell(batch.get('entry_point'))}`"
    )


_SMALL_SECTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "pipeline": pipeline_section,
    "promote": promote_section,
    "rollback": rollback_section,
    "batch": batch_section,
}


def plots_section(evaluate: Mapping[str, Any] | None, artifact_url: str | None) -> str:
    names = [Path(path).stem.replace("_", " ") for path in (evaluate or {}).get("plots") or []]
    if not names:
        return ""
    where = (
        f"[the `model-report` artifact]({artifact_url})"
        if artifact_url
        else "the `model-report` artifact of this run"
    )
    return f"### Plots\n\n{', '.join(names)} of the candidate on the holdout: in {where}."


def card_section(card: Mapping[str, Any] | None, artifact_url: str | None) -> str:
    """Where the candidate's model card is: reports/model_card.md in the uploaded reports."""
    if not card:
        return ""
    where = (
        f"[the `model-report` artifact]({artifact_url})"
        if artifact_url
        else "the `model-report` artifact of this run"
    )
    return (
        f"### Model card\n\nThe model card of v{card['model']['version']} (intended use, training "
        f"data, holdout metrics, the gate's decision, known limits, lineage): `model_card.md` in "
        f"{where}; a server answers it at `GET /model_card`."
    )


def _version(version: Any) -> str:
    return "none" if version is None else f"v{version}"


def render(
    reports: Mapping[str, Mapping[str, Any] | None],
    greater_is_better: Mapping[str, bool],
    provenance: Provenance,
    sections: tuple[str, ...] = ("evaluate", "validate"),
) -> str:
    """The report in Markdown: a title, then one section per name in `sections`, then (with the
    evaluation) the plots and the model card's link, when `reports` hold them (CARD).

    A missing report gives a clear line in its section instead of an error, so a failed step still
    leaves a useful comment.
    """
    header = f"## {provenance.title}"
    evaluate = reports.get("evaluate")
    if evaluate is not None and "evaluate" in sections:
        from .. import evaluation

        header += (
            f": **{evaluation.decision_label(evaluate)}** v{evaluate.get('candidate_version')}"
        )
    about = []
    if provenance.sha:
        about.append(f"commit `{provenance.sha[:12]}`")
    if provenance.run_url:
        about.append(f"[workflow run]({provenance.run_url})")
    parts = [header]
    if about:
        parts.append(" · ".join(about))
    parts += [f"> {note}" for note in provenance.notes]
    parts += [section(name, reports.get(name), greater_is_better, provenance) for name in sections]
    if "evaluate" in sections:
        parts.append(plots_section(evaluate, provenance.artifact_url))
        parts.append(card_section(reports.get(CARD), provenance.artifact_url))
    parts = [part for part in parts if part]
    return "\n\n".join(parts) + "\n"


def body(report: str, run_url: str | None = None) -> str:
    """The pull request comment: the hidden marker, then the report, cut below GitHub's limit."""
    where = f"the [job summary]({run_url})" if run_url else "the job summary"
    note = f"_Truncated: this report is longer than a comment may be. The full text is in {where}._"
    return MARKER + "\n" + truncate(report, COMMENT_LIMIT - utf16_length(MARKER) - 1, note)


# Where the champion came from: the registry's, or the base branch's model trained in the same job


def champion_source(
    github: GitHubContext, imported: Mapping[str, Any] | None = None
) -> tuple[str, list[str]]:
    """Where the champion of a pull request's evaluation came from, and notes for the reader.

    Reads what ci.yml passes: CHAMPION_MODE (`server` or `baseline`, from `check-config --for ci`),
    BASE_REF and BASE_SHA (the pull request's base), BASELINE_OUTCOME (the baseline step's outcome);
    in server mode, `imported` is the `import-champion` report (the registry's version it copied).
    """
    if github.champion_mode == "server":
        copied = (imported or {}).get("registry_version")
        if copied is None:
            return "the registry's champion", []
        return f"the registry's champion v{copied}, copied into this job's own store", []
    base = f"`{cell(github.base_ref, 100)}`" if github.base_ref else "the base branch"
    sha = cell((github.base_sha or "")[:12])
    source = f"trained from {base}" + (f" at `{sha}`" if sha else "") + " in this job, on this data"
    outcome = github.baseline_outcome or ""
    if outcome and outcome != "success":
        return source, [
            f"The base branch's model could not be trained (step outcome: {cell(outcome)}), so the "
            "candidate is compared with no champion; see the job log."
        ]
    return source, []


def baseline_params(base: dict[str, Any], head_source: str, model_name: str) -> dict[str, Any]:
    """The base branch's params, trained on the head's data and registered under the head's name.

    Same data: the baseline differs from the candidate only by what the pull request changed in code
    and params. Same registered model: the head's `evaluate` finds it as the champion.
    """
    params = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    if not isinstance(params.get("data"), dict) or not isinstance(params.get("registry"), dict):
        raise ValueError("the base branch's params.yaml has no data or registry section")
    params["data"]["source"] = head_source
    params["registry"]["model_name"] = model_name
    return params
