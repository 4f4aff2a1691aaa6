"""The command line: one subcommand per stage, and `pipeline` to run them in order.

Every command prints a short summary, writes `reports/<command>.json` (and `.md` for people), and exits
0 on success, 1 when a check it ran failed (invalid data, failed smoke test, a gate rejection under
`--fail-on-reject`), 2 on bad input or configuration. CI workflows call these commands and nothing else.

Stage modules are imported inside the commands, so a command loads only the stack it needs (MLflow,
great-expectations and BentoML each take seconds to import).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import data, reports
from .errors import CheckFailed, PipelineError, SettingsError, StateError
from .settings import Settings, load_settings

if TYPE_CHECKING:  # the stage modules are imported in the commands that use them
    from .monitoring.verdict import Finding
    from .registry import Registry

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2
PROG = __package__


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


# Stages (pipeline.py does the work). Each returns its result dict after writing its report.


def run_validate(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline

    return pipeline.validate(settings, _say)


def run_train(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline
    from .registry import Registry

    return pipeline.train(settings, Registry(settings), _say)


def run_evaluate(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline
    from .registry import Registry

    registry = Registry(settings)
    return pipeline.evaluate(
        settings, registry, _say, version=args.version, fail_on_reject=args.fail_on_reject
    )


def run_promote(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline
    from .registry import Registry

    return pipeline.promote(settings, Registry(settings), _say)


def run_rollback(settings: Settings, args: argparse.Namespace) -> dict:
    """Move champion back; with --if-champion N, undo the promotion of vN and only that.

    The guarded form is what a deploy workflow runs when anything after its promotion failed (see
    `Registry.undo_promotion_if_champion`).
    """
    from . import pipeline
    from .registry import Registry

    return pipeline.rollback(
        settings,
        Registry(settings),
        _say,
        why=args.reason,
        to_version=args.to_version,
        if_champion=args.if_champion,
    )


def _version_or_champion(registry: Registry, version: int | None) -> int:
    from .registry import CHAMPION

    version = version or registry.alias_version(CHAMPION)
    if version is None:
        raise StateError("there is no champion yet: promote a model or pass --version")
    return version


def run_build(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline
    from .registry import Registry

    version = _version_or_champion(Registry(settings), args.version)
    return pipeline.build(settings, version, _say, export=args.export)


def run_import_bento(settings: Settings, args: argparse.Namespace) -> dict:
    """Put a bento archive from `build --export` in the local store, as if `build` had run here."""
    from .deploy import bento

    tag, version = bento.import_bento(settings, args.archive)
    result = {"bento": tag, "model_version": version, "archive": str(args.archive)}
    reports.write_report(settings.reports_dir, "build", result)
    _say(f"imported bento {tag} with model v{version}")
    return result


def run_serve(settings: Settings, args: argparse.Namespace) -> dict:
    from .deploy import server

    built = reports.read_report(settings.reports_dir, "build")
    serving = settings.params.serving
    command = server.serve_command(built["bento"], serving.host, args.port or serving.port)
    _say(f"serving {built['bento']} on http://{serving.host}:{args.port or serving.port}")
    if serving.require_auth:
        _say(
            "clients send 'Authorization: Bearer <token>': $SERVICE_API_TOKEN or .runtime/api-token"
        )
    # The server takes over this process, as a container would.
    os.execvpe(command[0], command, server.server_environment(settings))
    return {}


def run_smoke(settings: Settings, args: argparse.Namespace) -> dict:
    """Smoke-test a running server (--url), or start the last built bento, test it and stop it."""
    from . import pipeline
    from .deploy.smoke import LoadTest

    # A running server with a given version needs no build report (e.g. a production URL).
    built = {} if args.url and args.version else reports.read_report(settings.reports_dir, "build")
    return pipeline.smoke(
        settings,
        args.version or built["model_version"],
        _say,
        bento=built.get("bento"),
        url=args.url,
        wait_seconds=args.wait_seconds,
        # With --load-seconds, a bounded load test follows the checks (only if they passed).
        load=LoadTest(args.load_seconds, args.load_concurrency) if args.load_seconds else None,
    )


def run_rollout(settings: Settings, args: argparse.Namespace) -> dict:
    """Roll the candidate (challenger, or --version) out beside the champion, step by step.

    `--target local` (default) rehearses the plan on this machine: both models on local servers,
    nginx in front, steady traffic from a second process. `--target kubernetes` runs it on a cluster:
    the candidate's `--image` goes into the free slot of `--overlay`, and the route's weights move.
    With --promote, a canary or blue-green that passed makes the candidate the champion
    (compare-and-set); a breach sends traffic back and changes nothing in the registry.
    """
    from . import rollout
    from .registry import CHALLENGER, CHAMPION, Registry, describe

    params = settings.params.rollout
    if args.strategy:
        params = params.model_copy(update={"strategy": args.strategy})
    registry = Registry(settings)
    champion = registry.alias_version(CHAMPION)
    candidate = args.version or registry.alias_version(CHALLENGER)
    if champion is None or candidate is None or champion == candidate:
        raise StateError(
            f"a rollout needs a champion and another candidate (champion {describe(champion)}, "
            f"candidate {describe(candidate)}); the first model is promoted without one"
        )

    def say_step(done: rollout.StepResult) -> None:
        _say(f"{done.step.name}: " + ("; ".join(done.breaches) or "pass"))

    _say(f"rollout ({params.strategy}) of v{candidate} beside v{champion} on {args.target}")
    if args.target == "kubernetes":
        from .rollout import kubernetes

        if not args.image or not args.overlay:
            raise SettingsError("--target kubernetes needs --image and --overlay")
        result = kubernetes.roll_out(
            params,
            champion,
            candidate,
            overlay=args.overlay,
            image=args.image,
            prometheus_url=settings.prometheus_url,
            champion_slot=args.champion_slot,
            on_step=say_step,
        )
    else:
        from .rollout import local

        result = local.roll_out(
            settings,
            params,
            champion,
            candidate,
            params_path=args.params,
            traffic_threads=args.traffic,
            on_step=say_step,
        )
    if result["passed"] and args.promote and params.strategy != "shadow":
        why = f"{params.strategy} rollout passed"
        result["promotion"] = registry.promote(candidate, champion, why=why)
        reports.write_report(settings.reports_dir, "promote", result["promotion"])
    reports.write_report(settings.reports_dir, "rollout", result, rollout.markdown(result))
    if not result["passed"]:
        raise CheckFailed(
            f"rollout of v{candidate} rolled back: {result['steps'][-1]['breaches'][0]}"
        )
    _say(f"rollout of v{candidate} passed" + (" and promoted" if "promotion" in result else ""))
    return result


def run_traffic(settings: Settings, args: argparse.Namespace) -> dict:
    """Steady client traffic to a server or proxy, every answer recorded (for local rollouts)."""
    from . import loadtest
    from .deploy import payloads

    records = payloads.as_records(payloads.sample_rows(settings, rows=200))
    record = Path(args.record)
    sent = loadtest.steady_traffic(
        args.url,
        records,
        args.seconds,
        record,
        args.concurrency,
        headers=settings.client_headers(),
    )
    return {"url": args.url, "requests": sent, "record": str(record)}


def run_batch(settings: Settings, args: argparse.Namespace) -> dict:
    from . import batch
    from .registry import Registry

    batch.use_compact_memory_pool()
    registry = Registry(settings)
    version = _version_or_champion(registry, args.version)
    model = registry.load_model(version)
    result = batch.score_file(
        model,
        list(model.feature_names_in_),
        version,
        settings.resolve(args.input or settings.params.batch.input),
        settings.resolve(args.output or settings.params.batch.output),
        settings.params.batch.chunk_rows,
    )
    reports.write_report(settings.reports_dir, "batch", result)
    _say(f"scored {result['rows']} rows with v{version} -> {result['output']}")
    return result


def run_history(settings: Settings, args: argparse.Namespace) -> dict:
    from .registry import Registry

    registry = Registry(settings)
    entries = registry.history()
    result = {"aliases": registry.aliases(), "history": entries}
    rows = [
        [
            e["sequence"],
            e["at"],
            e["by"],
            e["action"],
            e["alias"],
            e["before"],
            e["after"],
            e["why"],
        ]
        for e in entries
    ]
    markdown = reports.markdown_table(
        ["#", "when", "who", "action", "alias", "from", "to", "why"], rows
    )
    reports.write_report(settings.reports_dir, "history", result, markdown)
    print(markdown)
    return result


def _drift(settings: Settings, args: argparse.Namespace) -> tuple[dict, str]:
    """Run `drift` and write its report; returns the result and its Markdown."""
    from .monitoring import drift, windows

    window = windows.time_range(args.since, args.until, settings.params.monitoring.window_hours)
    result = drift.judge(settings, window, settings.reports_dir / "drift.html")
    markdown = drift.markdown(result)
    reports.write_report(settings.reports_dir, "drift", result, markdown)
    return result, markdown


def run_drift(settings: Settings, args: argparse.Namespace) -> dict:
    """Logged features of a window (default: the last monitoring.window_hours) against training."""
    from .monitoring import verdict

    result, _ = _drift(settings, args)
    finding = verdict.drift_finding(result)
    if finding.flagged:
        raise CheckFailed(finding.line)
    _say(finding.line)
    return result


def _performance(settings: Settings, args: argparse.Namespace) -> tuple[dict, str]:
    """Run `performance` and write its report; returns the result and its Markdown."""
    from .monitoring import performance, windows
    from .registry import Registry

    params = settings.params.monitoring
    hours = params.window_hours if args.window_hours is None else args.window_hours
    if hours <= 0:
        raise SettingsError(f"--window-hours: {hours} is not a positive number of hours")
    default_hours = hours * params.retrain_after_windows  # enough windows for the retraining streak
    within = windows.time_range(args.since, args.until, default_hours)
    result = performance.judge(settings, Registry(settings), within, hours)
    markdown = performance.markdown(result)
    reports.write_report(settings.reports_dir, "performance", result, markdown)
    return result, markdown


def run_performance(settings: Settings, args: argparse.Namespace) -> dict:
    """The primary metric on labelled predictions per window, against the champion's holdout metric."""
    from .monitoring import verdict

    result, _ = _performance(settings, args)
    finding = verdict.decay_finding(result)
    if finding.flagged:
        raise CheckFailed(finding.line)
    _say(finding.line)
    return result


def _say_unless_flagged(finding: Finding) -> None:
    """What a check found when it is not a problem: the problems go to the verdict."""
    if not finding.flagged:
        _say(finding.line)


def run_monitor(settings: Settings, args: argparse.Namespace) -> dict:
    """`drift` and `performance`, then what monitor.yml does about them.

    Exits 0 whatever the verdicts (bad input still exits 2): `alert` and `retrain` become step
    outputs, and the story goes to the job summary and to --issue-body, the monitoring issue's text.
    """
    from .github import actions, issue
    from .monitoring import verdict

    drifted, drift_markdown = _drift(settings, args)
    _say_unless_flagged(verdict.drift_finding(drifted))
    decayed, performance_markdown = _performance(settings, args)
    _say_unless_flagged(verdict.decay_finding(decayed))
    decided = verdict.verdict(drifted, decayed)
    github = settings.env.github
    body = issue.body(decided, f"{drift_markdown}\n\n{performance_markdown}", github.run_url)
    if args.issue_body:
        Path(args.issue_body).parent.mkdir(parents=True, exist_ok=True)
        Path(args.issue_body).write_text(body)
    flags = {"alert": decided.alert, "retrain": decided.retrain}
    actions.write_outputs({name: str(flag).lower() for name, flag in flags.items()}, github)
    actions.append_summary(body, github)
    result = {**flags, "drift": decided.drift.problem, "decay": decided.decay.problem}
    reports.write_report(settings.reports_dir, "monitor", result, body)
    _say(decided.headline + ("; retrain" if decided.retrain else ""))
    return result


def run_suggest_suite(settings: Settings, args: argparse.Namespace) -> dict:
    """Profile the data into a starting expectation suite, to review and commit."""
    from . import validation

    frame = data.read_table(settings.resolve(settings.params.data.source))
    path = Path(settings.resolve(settings.params.validation.suite))
    suite = validation.suggest_suite(frame, settings.params.data.target, path.stem)
    validation.write_suite(suite, path)
    _say(
        f"wrote {len(suite['expectations'])} expectations to {path}; review them before committing"
    )
    return {"suite": str(path)}


def run_pipeline(settings: Settings, args: argparse.Namespace) -> dict:
    from . import pipeline
    from .registry import Registry

    return pipeline.run(settings, Registry(settings), _say, args.fail_on_reject)


# GitHub Actions: what the workflows call around the stages (see the github package).


def run_comment(settings: Settings, args: argparse.Namespace) -> dict:
    """The pull request comment (hidden marker first) from the reports; the same in the job summary."""
    from .github import actions, comment

    github = settings.env.github
    source, notes = comment.champion_source(github)
    provenance = comment.Provenance(
        title="Model report",
        run_url=github.run_url,
        artifact_url=args.artifact_url or github.artifact_url,
        sha=github.pr_head_sha or github.sha,
        champion_source=source,
        notes=notes,
    )
    sections = ("evaluate", "validate")
    found = reports.load_reports(settings.reports_dir, sections)
    report = comment.render(found, settings.greater_is_better, provenance, sections)
    body = comment.body(report, provenance.run_url)
    path = Path(args.output or settings.reports_dir / "comment.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    actions.append_summary(report, github)
    _say(f"wrote the pull request comment to {path} ({actions.utf16_length(body)} characters)")
    return {"comment": str(path)}


def run_summary(settings: Settings, args: argparse.Namespace) -> dict:
    """Render reports into $GITHUB_STEP_SUMMARY (printed when not in a GitHub Actions step)."""
    from .github import actions, comment

    github = settings.env.github
    sections = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    unknown = sorted(set(sections) - set(comment.SECTIONS))
    if unknown:
        raise SettingsError(
            f"--sections: unknown {unknown}; choose from {sorted(comment.SECTIONS)}"
        )
    provenance = comment.Provenance(
        title=args.title,
        run_url=github.run_url,
        artifact_url=args.artifact_url or github.artifact_url,
        sha=github.sha,
    )
    found = reports.load_reports(settings.reports_dir, sections)
    report = comment.render(found, settings.greater_is_better, provenance, sections)
    if not actions.append_summary(report, github):
        print(report)
    return {"summary": report}


def run_outputs(settings: Settings, args: argparse.Namespace) -> dict:
    """Write the values later steps and jobs need from a report to $GITHUB_OUTPUT."""
    from .github import actions

    values = actions.outputs_from(args.stage, reports.read_report(settings.reports_dir, args.stage))
    print(actions.write_outputs(values, settings.env.github), end="")
    return values


def run_api_token(settings: Settings, args: argparse.Namespace) -> dict:
    """Print the token this machine's clients send, for a server started by hand or in a container:
    `SERVICE_API_TOKENS="$(<cli> api-token)" docker run --env SERVICE_API_TOKENS ...`, or
    `curl -H "Authorization: Bearer $(<cli> api-token)" ...`.
    """
    print(settings.api_token())
    return {}


def run_check_config(settings: Settings, args: argparse.Namespace) -> dict:
    """Say whether the repository is configured for a workflow, and exactly what to set if not.

    Always exits 0: an unconfigured repository is a normal state, reported in the job summary, and the
    `configured` output lets the workflow skip its remaining steps.
    """
    from .github import actions, config_check

    params = settings.params
    locations = {
        "data": params.data.source,
        "input": settings.env.batch_input or params.batch.input,
        "output": settings.env.batch_output or params.batch.output,
        "prediction_log": params.monitoring.prediction_log,
        "labels": params.monitoring.labels,
    }
    check = config_check.check(args.purpose, settings.env, locations, settings.project_dir)
    actions.write_outputs(check.outputs, settings.env.github)
    if not actions.append_summary(check.summary(), settings.env.github):
        print(check.summary())
    _say(
        f"{args.purpose}: "
        + ("configured" if check.configured else "not configured (see the job summary)")
    )
    return {"configured": check.configured, **check.outputs}


def run_baseline_params(settings: Settings, args: argparse.Namespace) -> dict:
    """Params for training the base branch's code on this checkout's data (pull requests, no server)."""
    import yaml

    from .github import comment

    base_dir = Path(args.base_dir)
    source = base_dir / "params.yaml"
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
    target = base_dir / "params.ci.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    _say(f"wrote {target}: the base branch's params on this checkout's data")
    return {"params": str(target)}


COMMANDS: dict[str, tuple[Callable[[Settings, argparse.Namespace], dict], str]] = {
    "validate": (run_validate, "check the data against the expectation suite"),
    "train": (run_train, "validate, train, register, and alias the new version as challenger"),
    "evaluate": (run_evaluate, "score challenger and champion on the same holdout; apply the gate"),
    "promote": (run_promote, "make the evaluated challenger the champion (compare-and-set)"),
    "rollback": (run_rollback, "move champion back to previous (or --to-version)"),
    "build": (run_build, "build the BentoML bento for the champion (or --version)"),
    "serve": (run_serve, "serve the last built bento in the foreground"),
    "smoke": (run_smoke, "smoke-test a server (--url) or the last built bento"),
    "rollout": (
        run_rollout,
        "shadow, canary or blue-green rollout of the candidate, with rollback",
    ),
    "traffic": (run_traffic, "send steady /predict traffic to a URL and record every answer"),
    "batch": (run_batch, "score a file with the champion (or --version)"),
    "history": (run_history, "show every recorded alias move"),
    "drift": (run_drift, "data drift of the logged features of a window against the training data"),
    "monitor": (run_monitor, "drift and performance, then the alert and retraining verdicts"),
    "performance": (
        run_performance,
        "the primary metric on labelled predictions per window, against the champion's",
    ),
    "suggest-suite": (run_suggest_suite, "write a starting expectation suite from the data"),
    "pipeline": (
        run_pipeline,
        "the whole loop: validate, train, evaluate, promote, deploy, verify",
    ),
    "import-bento": (run_import_bento, "put a bento archive from `build --export` in the store"),
    "comment": (run_comment, "write the pull request comment (and job summary) from the reports"),
    "summary": (run_summary, "append reports to the GitHub Actions job summary"),
    "outputs": (run_outputs, "write a report's key values as GitHub Actions step outputs"),
    "api-token": (run_api_token, "print the API token clients send ($SERVICE_API_TOKEN or local)"),
    "check-config": (run_check_config, "say what a workflow still needs configured, if anything"),
    "baseline-params": (run_baseline_params, "params to train the base branch on this data"),
}


def parser() -> argparse.ArgumentParser:
    from .github import actions, comment

    root = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    root.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    commands = root.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        if name in {"evaluate", "build", "smoke", "batch", "rollout"}:
            command.add_argument("--version", type=int, help="registered model version")
        if name in {"evaluate", "pipeline"}:
            command.add_argument(
                "--fail-on-reject", action="store_true", help="exit 1 when the gate rejects"
            )
        if name == "rollback":
            command.add_argument(
                "--to-version", type=_optional_int, help="default (or empty): the `previous` alias"
            )
            command.add_argument("--reason", default="manual rollback", help="recorded in history")
            command.add_argument(
                "--if-champion",
                type=_optional_int,
                help="undo the promotion of this version only if it is still the champion",
            )
        if name == "serve":
            command.add_argument("--port", type=int, help="default: serving.port in params")
        if name == "smoke":
            command.add_argument("--url", help="a running server; default: start the built bento")
            command.add_argument(
                "--wait-seconds",
                type=float,
                default=0,
                help="with --url: first wait up to this long for the server to serve the version",
            )
            command.add_argument(
                "--load-seconds",
                type=float,
                default=0,
                help="then load-test /predict for this long (default 0: no load test)",
            )
            command.add_argument("--load-concurrency", type=int, default=4, help="client threads")
        if name == "rollout":
            command.add_argument(
                "--target",
                choices=["local", "kubernetes"],
                default="local",
                help="local: both models behind nginx here; kubernetes: the cluster of $KUBECONFIG",
            )
            command.add_argument(
                "--overlay", help="kubernetes: e.g. deploy/k8s/overlays/production"
            )
            command.add_argument("--image", help="kubernetes: the candidate's container image")
            command.add_argument(
                "--champion-slot",
                choices=["blue", "green"],
                help="kubernetes: default, the slot the live route serves from",
            )
            command.add_argument(
                "--strategy",
                choices=["canary", "shadow", "blue-green"],
                help="default: rollout.strategy in params",
            )
            command.add_argument(
                "--traffic",
                type=int,
                default=4,
                help="client threads sending traffic through the proxy (0: bring your own)",
            )
            command.add_argument(
                "--promote", action="store_true", help="promote the candidate if the rollout passed"
            )
        if name == "traffic":
            command.add_argument("--url", required=True, help="server or proxy to send to")
            command.add_argument("--seconds", type=float, required=True, help="how long at most")
            command.add_argument("--concurrency", type=int, default=4, help="client threads")
            command.add_argument("--record", required=True, help="JSON lines file of every answer")
        if name == "build":
            command.add_argument("--export", help="also write the bento archive to this file")
        if name == "import-bento":
            command.add_argument("archive", help="a file written by `build --export`")
        if name in {"comment", "summary"}:
            command.add_argument("--artifact-url", help="where the plots were uploaded")
        if name == "comment":
            command.add_argument("--output", help="default: reports/comment.md")
        if name == "summary":
            command.add_argument("--title", default="Model report", help="the summary's heading")
            command.add_argument(
                "--sections",
                default="evaluate,validate",
                help="comma-separated: " + ", ".join(comment.SECTIONS),
            )
        if name == "outputs":
            command.add_argument("stage", choices=list(actions.OUTPUTS))
        if name == "check-config":
            command.add_argument(
                "--for",
                dest="purpose",
                required=True,
                choices=["ci", "cd", "rollback", "batch", "monitor"],
            )
        if name == "baseline-params":
            command.add_argument("base_dir", help="checkout of the base branch")
        if name in {"drift", "performance"}:
            command.add_argument(
                "--since", help="ISO 8601 time, UTC unless it says otherwise (default: see --until)"
            )
            command.add_argument("--until", help="ISO 8601 time (default: now)")
        if name == "drift":
            command.description += "; --since defaults to monitoring.window_hours before --until"
        if name == "performance":
            command.add_argument(
                "--window-hours", type=float, help="default: monitoring.window_hours in params"
            )
            command.description += (
                "; --since defaults to monitoring.retrain_after_windows windows before --until"
            )
        if name == "monitor":  # the latest windows, as drift and performance judge by default
            command.set_defaults(since=None, until=None, window_hours=None)
            command.add_argument("--issue-body", help="write the monitoring issue's text here")
        if name == "batch":
            command.add_argument("--input", help="default: batch.input in params")
            command.add_argument("--output", help="default: batch.output in params")
    return root


def _optional_int(text: str) -> int | None:
    """An int, or None for an empty string: workflow inputs pass "" when left blank."""
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.params)
        COMMANDS[args.command][0](settings, args)
    except CheckFailed as failure:
        print(f"{PROG}: FAILED: {failure}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except (PipelineError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
