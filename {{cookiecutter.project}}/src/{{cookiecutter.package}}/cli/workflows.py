"""What the GitHub Actions workflows call around the stages: the pull request comment, job
summaries, step outputs, the configuration check, and the base branch's params (see `github/`)."""

from __future__ import annotations

from pathlib import Path

from .. import reports
from ..errors import CheckFailed, SecurityError, SettingsError
from ..github import actions, comment, config_check
from ..settings import Settings
from .command import Command, argument, open_registry, say

ARTIFACT_URL = argument("--artifact-url", help="where the plots were uploaded")
IMPORT_CHAMPION = "import-champion"


def write_comment(settings: Settings, artifact_url: str | None, output: str | None) -> dict:
    """The pull request comment (hidden marker first) from the reports; the same in the job summary."""
    github = settings.env.github
    imported = reports.load_reports(settings.reports_dir, (IMPORT_CHAMPION,))[IMPORT_CHAMPION]
    source, notes = comment.champion_source(github, imported)
    provenance = comment.Provenance(
        title="Model report",
        run_url=github.run_url,
        artifact_url=artifact_url or github.artifact_url,
        sha=github.pr_head_sha or github.sha,
        champion_source=source,
        notes=notes,
    )
    sections = ("evaluate", "validate")
    found = reports.load_reports(settings.reports_dir, (*sections, comment.CARD))
    report = comment.render(found, settings.greater_is_better, provenance, sections)
    body = comment.body(report, provenance.run_url)
    path = Path(output or settings.reports_dir / "comment.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    actions.append_summary(report, github)
    say(f"wrote the pull request comment to {path} ({actions.utf16_length(body)} characters)")
    return {"comment": str(path)}


def summary(settings: Settings, artifact_url: str | None, title: str, sections: str) -> dict:
    """Render reports into $GITHUB_STEP_SUMMARY (printed when not in a GitHub Actions step)."""
    github = settings.env.github
    wanted = tuple(name.strip() for name in sections.split(",") if name.strip())
    unknown = sorted(set(wanted) - set(comment.SECTIONS))
    if unknown:
        raise SettingsError(
            f"--sections: unknown {unknown}; choose from {sorted(comment.SECTIONS)}"
        )
    provenance = comment.Provenance(
        title=title,
        run_url=github.run_url,
        artifact_url=artifact_url or github.artifact_url,
        sha=github.sha,
    )
    found = reports.load_reports(settings.reports_dir, (*wanted, comment.CARD))
    report = comment.render(found, settings.greater_is_better, provenance, wanted)
    if not actions.append_summary(report, github):
        print(report)
    return {"summary": report}


def outputs(settings: Settings, stage: str) -> dict:
    """Write the values later steps and jobs need from a report to $GITHUB_OUTPUT."""
    values = actions.outputs_from(stage, reports.read_report(settings.reports_dir, stage))
    print(actions.write_outputs(values, settings.env.github), end="")
    return values


def check_config(settings: Settings, purpose: str) -> dict:
    """Say whether the repository is configured for a workflow, and exactly what to set if not.

    Always exits 0: an unconfigured repository is a normal state, reported in the job summary, and the
    `configured` output lets the workflow skip its remaining steps.
    """
    params = settings.params
    locations = {
        "data": params.data.source,
        "input": settings.env.batch_input or params.batch.input,
        "output": settings.env.batch_output or params.batch.output,
        "prediction_log": params.monitoring.prediction_log,
        "labels": params.monitoring.labels,
    }
    emr = params.batch.emr_serverless
    check = config_check.check(
        purpose,
        settings.env,
        locations,
        settings.project_dir,
        emr_application=emr.application_id if emr else None,
    )
    actions.write_outputs(check.outputs, settings.env.github)
    if not actions.append_summary(check.summary(), settings.env.github):
        print(check.summary())
    state = "configured" if check.configured else "not configured (see the job summary)"
    say(f"{purpose}: {state}")
    return {"configured": check.configured, **check.outputs}


def import_champion(settings: Settings, source: str) -> dict:
    """Copy the registry's champion (read-only) into this job's local store, digest checked first.

    The pull request's model job calls it in server mode: its candidate is trained and evaluated in
    the local store, so nothing of a pull request is written to the team's registry.
    """
    from ..champion_copy import import_champion as copy

    local = settings.tracking_uri
    if not local.startswith("sqlite:"):
        raise SettingsError(
            f"MLFLOW_TRACKING_URI is {local.split('://')[0]}://...: import-champion writes only to "
            "a local sqlite store (the job's own); the registry to read is --from"
        )
    if not source.strip() or source == local:
        raise SettingsError("--from: the URL of the team's tracking server, not the local store")
    try:
        result = copy(open_registry(settings), source)
    except SecurityError as error:
        raise CheckFailed(str(error)) from None
    reports.write_report(settings.reports_dir, IMPORT_CHAMPION, result)
    if result["champion"] is None:
        say(f"the registry at {result['registry']} has no champion yet: nothing to compare with")
    else:
        say(
            f"champion v{result['registry_version']} of {result['registry']}, digest checked, "
            f"is v{result['champion']} of the local store"
        )
    return result


def baseline_params(settings: Settings, base_dir: str) -> dict:
    """Params for training the base branch's code on this checkout's data (pull requests, no server)."""
    import yaml

    source = Path(base_dir) / "params.yaml"
    try:
        base = yaml.safe_load(source.read_text())
        params = comment.baseline_params(
            base,
            settings.resolve(settings.params.data.source),
            settings.params.registry.model_name,
        )
    except FileNotFoundError:
        raise SettingsError(f"{source}: the base branch has no params file") from None
    except (yaml.YAMLError, ValueError, AttributeError) as error:
        raise SettingsError(f"{source}: cannot be used as the baseline's params: {error}") from None
    target = Path(base_dir) / "params.ci.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    say(f"wrote {target}: the base branch's params on this checkout's data")
    return {"params": str(target)}


COMMANDS = (
    Command(
        "comment",
        "write the pull request comment (and job summary) from the reports",
        write_comment,
        (ARTIFACT_URL, argument("--output", help="default: reports/comment.md")),
    ),
    Command(
        "summary",
        "append reports to the GitHub Actions job summary",
        summary,
        (
            ARTIFACT_URL,
            argument("--title", default="Model report", help="the summary's heading"),
            argument(
                "--sections",
                default="evaluate,validate",
                help="comma-separated: " + ", ".join(comment.SECTIONS),
            ),
        ),
    ),
    Command(
        "outputs",
        "write a report's key values as GitHub Actions step outputs",
        outputs,
        (argument("stage", choices=list(actions.OUTPUTS)),),
    ),
    Command(
        "check-config",
        "say what a workflow still needs configured, if anything",
        check_config,
        (
            argument(
                "--for",
                dest="purpose",
                required=True,
                choices=["ci", "cd", "rollback", "batch", "monitor"],
            ),
        ),
    ),
    Command(
        IMPORT_CHAMPION,
        "copy the registry's champion into the local store (pull requests, read-only)",
        import_champion,
        (
            argument(
                "--from",
                dest="source",
                required=True,
                help="the team's tracking server (read with a read-only MLFLOW_TRACKING_TOKEN)",
            ),
        ),
    ),
    Command(
        "baseline-params",
        "params to train the base branch on this data",
        baseline_params,
        (argument("base_dir", help="checkout of the base branch"),),
    ),
)
