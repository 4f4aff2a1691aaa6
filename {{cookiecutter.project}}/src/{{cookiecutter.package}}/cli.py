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

from . import data, reports
from .errors import CheckFailed, PipelineError, SettingsError, StateError
from .settings import Settings, load_settings

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2
PROG = __package__


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


# Stages. Each returns its result dict after writing its report.


def run_validate(settings: Settings, args: argparse.Namespace) -> dict:
    from . import validation

    source = settings.resolve(settings.params.data.source)
    frame = data.read_table(source)
    suite = validation.load_suite(settings.resolve(settings.params.validation.suite))
    result = {
        **validation.validate(frame, suite),
        "source": source,
        "fingerprint": data.fingerprint(frame),
    }
    reports.write_report(settings.reports_dir, "validate", result, validation.to_markdown(result))
    if not result["success"]:
        raise CheckFailed(
            f"data invalid: {result['failed']} of {result['evaluated']} expectations failed; "
            f"see {settings.reports_dir / 'validate.md'}"
        )
    _say(f"data valid: {result['evaluated']} expectations on {result['rows']} rows")
    return result


def run_train(settings: Settings, args: argparse.Namespace) -> dict:
    from . import training

    run_validate(settings, args)  # never register a model trained on data that failed validation
    frame = data.read_table(settings.resolve(settings.params.data.source))
    trained = training.train(settings, frame)
    result = {
        "model_version": trained.model_version,
        "run_id": trained.run_id,
        "holdout_metrics": trained.metrics,
        "data_fingerprint": trained.data_fingerprint,
        "params_hash": trained.params_hash,
        "git_sha": trained.git_sha,
    }
    reports.write_report(settings.reports_dir, "train", result)
    metric = settings.params.gate.primary_metric
    _say(
        f"trained v{trained.model_version} ({settings.params.model.estimator}), "
        f"holdout {metric} {trained.metrics[metric]:.4f}; alias challenger -> v{trained.model_version}"
    )
    return result


def run_evaluate(settings: Settings, args: argparse.Namespace) -> dict:
    from . import evaluation, registry

    params = settings.params
    candidate = args.version or registry.alias_version(settings, registry.CHALLENGER)
    if candidate is None:
        raise StateError("no challenger to evaluate: run `train` first or pass --version")
    champion = registry.alias_version(settings, registry.CHAMPION)
    if champion == candidate:
        raise StateError(f"v{candidate} is already the champion; nothing to compare")
    frame = data.read_table(settings.resolve(params.data.source))
    _, _, x_holdout, y_holdout = data.train_holdout_split(
        frame, params.data.target, params.data.holdout_fraction
    )
    candidate_model = registry.load_model(settings, candidate)
    comparison = evaluation.compare(
        params.task,
        params.gate,
        settings.greater_is_better,
        x_holdout,
        y_holdout,
        (candidate, candidate_model),
        None if champion is None else (champion, registry.load_model(settings, champion)),
    )
    plots = evaluation.plot(
        candidate_model, x_holdout, y_holdout, params.task, settings.reports_dir / "plots"
    )
    result = {
        **comparison.to_dict(),
        "data_fingerprint": data.fingerprint(frame),
        "plots": [str(path) for path in plots],
    }
    markdown = evaluation.to_markdown(comparison, settings.greater_is_better)
    reports.write_report(settings.reports_dir, "evaluate", result, markdown)
    registry.log_evaluation(settings, candidate, comparison, plots)
    _say(f"gate: {comparison.decision} v{candidate}: {comparison.reasons[0]}")
    if comparison.decision == evaluation.REJECT and getattr(args, "fail_on_reject", False):
        raise CheckFailed(f"gate rejected v{candidate} (--fail-on-reject)")
    return result


def run_promote(settings: Settings, args: argparse.Namespace) -> dict:
    """Promote what the last evaluation approved, only if the champion has not moved since."""
    from . import evaluation, registry

    evaluated = reports.read_report(settings.reports_dir, "evaluate")
    version = evaluated["candidate_version"]
    if evaluated["decision"] != evaluation.PROMOTE:
        raise CheckFailed(f"the gate rejected v{version}; not promoting")
    why = "; ".join(evaluated["reasons"])
    result = registry.promote(settings, version, evaluated["champion_version"], why=why)
    reports.write_report(settings.reports_dir, "promote", result)
    _say(f"champion -> v{version} (previous: {_describe(result['previous'])})")
    return result


def run_rollback(settings: Settings, args: argparse.Namespace) -> dict:
    """Move champion back; with --if-champion N, undo the promotion of vN and only that.

    The guarded form is what a deploy workflow runs when anything after its promotion failed: if the
    champion is no longer vN (never promoted, or moved since), nothing changes; if vN was the first
    champion, the alias is removed again, as `pipeline` does after a failed first deployment.
    """
    from . import registry

    guard = getattr(args, "if_champion", None)
    if guard is not None:
        current = registry.alias_version(settings, registry.CHAMPION)
        if current != guard:
            result = {
                "skipped": True,
                "champion": current,
                "why": f"the champion is {_describe(current)}, not v{guard}: nothing to roll back",
            }
            reports.write_report(settings.reports_dir, "rollback", result)
            _say(result["why"])
            return result
        if args.to_version is None and registry.alias_version(settings, registry.PREVIOUS) is None:
            promotion = {"champion": guard, "previous": None, "replaced_previous": None}
            result = registry.revert_promotion(settings, promotion, why=args.reason)
            reports.write_report(settings.reports_dir, "rollback", result)
            _say(f"champion alias removed (v{guard} was the first champion)")
            return result
    result = registry.rollback(settings, why=args.reason, to_version=args.to_version)
    reports.write_report(settings.reports_dir, "rollback", result)
    _say(f"champion -> v{result['champion']} (rolled back from v{result['rolled_back_from']})")
    return result


def _describe(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _version_or_champion(settings: Settings, version: int | None) -> int:
    from . import registry

    version = version or registry.alias_version(settings, registry.CHAMPION)
    if version is None:
        raise StateError("there is no champion yet: promote a model or pass --version")
    return version


def run_build(settings: Settings, args: argparse.Namespace) -> dict:
    from .deploy import bento

    version = _version_or_champion(settings, args.version)
    result = {"bento": bento.build(settings, version), "model_version": version}
    if getattr(args, "export", None):
        result["archive"] = bento.export_bento(settings, result["bento"], args.export)
    reports.write_report(settings.reports_dir, "build", result)
    _say(f"built bento {result['bento']} with model v{version}")
    return result


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
    from . import loadtest
    from .deploy import server, smoke

    # A running server with a given version needs no build report (e.g. a production URL).
    built = (
        None if args.url and args.version else reports.read_report(settings.reports_dir, "build")
    )
    version = args.version or built["model_version"]
    # With --load-seconds, a bounded load test follows the checks (only if they passed).
    load = smoke.LoadTest(args.load_seconds, args.load_concurrency) if args.load_seconds else None
    if args.url:
        if args.wait_seconds:
            loadtest.wait_for_version(
                args.url, version, args.wait_seconds, headers=settings.client_headers()
            )
        result = smoke.run(settings, args.url, version, load)
    else:
        with server.serve(settings, built["bento"]) as running:
            result = smoke.run(settings, running.url, version, load)
    reports.write_report(settings.reports_dir, "smoke", result, smoke.markdown(result))
    if not result["passed"]:
        failed = [check["name"] for check in result["checks"] if not check["passed"]]
        raise CheckFailed(f"smoke test failed: {', '.join(failed)}")
    _say(f"smoke test passed against {result['url']} (v{version})")
    return result


def run_rollout(settings: Settings, args: argparse.Namespace) -> dict:
    """Roll the candidate (challenger, or --version) out beside the champion, step by step.

    `--target local` (default) rehearses the plan on this machine: both models on local servers,
    nginx in front, steady traffic from a second process. `--target kubernetes` runs it on a cluster:
    the candidate's `--image` goes into the free slot of `--overlay`, and the route's weights move.
    With --promote, a canary or blue-green that passed makes the candidate the champion
    (compare-and-set); a breach sends traffic back and changes nothing in the registry.
    """
    from . import registry, rollout

    params = settings.params.rollout
    if args.strategy:
        params = params.model_copy(update={"strategy": args.strategy})
    champion = registry.alias_version(settings, registry.CHAMPION)
    candidate = args.version or registry.alias_version(settings, registry.CHALLENGER)
    if champion is None or candidate is None or champion == candidate:
        raise StateError(
            f"a rollout needs a champion and another candidate (champion {_describe(champion)}, "
            f"candidate {_describe(candidate)}); the first model is promoted without one"
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
        result["promotion"] = registry.promote(settings, candidate, champion, why=why)
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
    from . import batch, registry

    batch.use_compact_memory_pool()
    version = _version_or_champion(settings, args.version)
    model = registry.load_model(settings, version)
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
    from . import registry

    entries = registry.history(settings)
    result = {"aliases": registry.aliases(settings), "history": entries}
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


def _verdict(
    result: dict, summary: str, flag: str, problem: str, fine: str
) -> tuple[dict, str | None]:
    """What drift and performance end with: the retraining note, then either the problem (for the
    caller to raise or report) or a line saying all is well. `problem`/`fine` hold `{}` for the
    summary."""
    if result["retrain"]:
        summary += f"; {flag} in the last {result['consecutive_windows']} judged windows: retrain"
    if result[flag]:
        return result, problem.format(summary)
    _say(fine.format(summary))
    return result, None


def _judge_drift(settings: Settings, args: argparse.Namespace) -> tuple[dict, str | None]:
    """Run and report `drift`; returns the result and, when the window drifted, what to say."""
    from . import monitoring

    params = settings.params.monitoring
    window = monitoring.time_range(args.since, args.until, params.window_hours)
    result = monitoring.drift(settings, window, settings.reports_dir / "drift.html")
    reports.write_report(settings.reports_dir, "drift", result, monitoring.drift_markdown(result))
    if not result["judged"]:
        _say(f"drift not judged: {result['reason']}")
        return result, None
    summary = (
        f"{len(result['drifted_features'])} of {len(result['features'])} features drifted "
        f"(share {result['share_drifted']:.2f}, threshold {params.drift_share:g}) in {result['rows']} rows"
        + (f": {', '.join(result['drifted_features'])}" if result["drifted_features"] else "")
    )
    problem = "data drift: {}; see " + str(settings.reports_dir / "drift.html")
    return _verdict(result, summary, "drifted", problem, "no data drift: {}")


def run_drift(settings: Settings, args: argparse.Namespace) -> dict:
    """Logged features of a window (default: the last monitoring.window_hours) against training."""
    result, drifted = _judge_drift(settings, args)
    if drifted:
        raise CheckFailed(drifted)
    return result


def _judge_performance(settings: Settings, args: argparse.Namespace) -> tuple[dict, str | None]:
    """Run and report `performance`; returns the result and, when the latest window decayed, what
    to say."""
    from . import monitoring

    params = settings.params.monitoring
    hours = params.window_hours if args.window_hours is None else args.window_hours
    if hours <= 0:
        raise SettingsError(f"--window-hours: {hours} is not a positive number of hours")
    default_hours = hours * params.retrain_after_windows  # enough windows for the retraining streak
    within = monitoring.time_range(args.since, args.until, default_hours)
    result = monitoring.performance(settings, within, hours)
    markdown = monitoring.performance_markdown(result)
    reports.write_report(settings.reports_dir, "performance", result, markdown)
    latest, metric = result["latest_judged"], result["metric"]
    if latest is None:
        reasons = sorted({w["reason"] for w in result["windows"]})
        _say(f"performance not judged in {len(result['windows'])} windows: {'; '.join(reasons)}")
        return result, None
    summary = (
        f"{metric} {latest['metric']:.4f} on {latest['labelled_rows']} labelled rows "
        f"({latest['start']} to {latest['end']}), champion v{result['champion']['version']} "
        f"{result['champion']['metric']:.4f}, tolerance {result['tolerance']}"
    )
    return _verdict(result, summary, "decayed", "performance decayed: {}", "performance holds: {}")


def run_performance(settings: Settings, args: argparse.Namespace) -> dict:
    """The primary metric on labelled predictions per window, against the champion's holdout metric."""
    result, decayed = _judge_performance(settings, args)
    if decayed:
        raise CheckFailed(decayed)
    return result


def run_monitor(settings: Settings, args: argparse.Namespace) -> dict:
    """`drift` and `performance`, then what monitor.yml does about them.

    Exits 0 whatever the verdicts (bad input still exits 2): `alert` and `retrain` become step
    outputs, and the story goes to the job summary and to --issue-body, the monitoring issue's text.
    """
    from . import github

    drift, drifted = _judge_drift(settings, args)
    performance, decayed = _judge_performance(settings, args)
    details = "\n\n".join(
        (settings.reports_dir / f"{name}.md").read_text() for name in ("drift", "performance")
    )
    verdict = github.monitoring_verdict(drift, performance, details, github.run_url(os.environ))
    if args.issue_body:
        Path(args.issue_body).parent.mkdir(parents=True, exist_ok=True)
        Path(args.issue_body).write_text(verdict.issue_body)
    flags = {"alert": verdict.alert, "retrain": verdict.retrain}
    github.write_outputs({name: str(flag).lower() for name, flag in flags.items()}, os.environ)
    github.append_summary(verdict.issue_body, os.environ)
    result = {**flags, "drift": drifted, "decay": decayed}
    reports.write_report(settings.reports_dir, "monitor", result, verdict.issue_body)
    _say(
        verdict.issue_body.splitlines()[1].removeprefix("## ")
        + ("; retrain" if verdict.retrain else "")
    )
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


def _stage_args(command: str, **values) -> argparse.Namespace:
    """The arguments a stage gets from its own command line defaults, with `values` set."""
    args = parser().parse_args([command])
    vars(args).update(values)
    return args


def run_pipeline(settings: Settings, args: argparse.Namespace) -> dict:
    """validate -> train -> evaluate -> (promote -> build -> serve + smoke), rolling back on failure."""
    from . import evaluation, registry

    trained = run_train(settings, args)
    args.version = trained["model_version"]
    evaluated = run_evaluate(settings, args)
    result = {"model_version": args.version, "decision": evaluated["decision"], "deployed": False}
    if evaluated["decision"] == evaluation.PROMOTE:
        promotion = run_promote(settings, args)
        try:
            run_build(settings, _stage_args("build", version=args.version))
            run_smoke(settings, _stage_args("smoke", version=args.version))
        except Exception as failure:
            rolled = registry.revert_promotion(
                settings, promotion, why=f"deployment of v{args.version} failed: {failure}"
            )
            result.update(rolled_back=True, failure=str(failure), champion=rolled["champion"])
            reports.write_report(settings.reports_dir, "pipeline", result)
            raise CheckFailed(
                f"v{args.version} failed after promotion ({failure}); "
                f"champion is back to {_describe(rolled['champion'])}"
            ) from failure
        result.update(deployed=True, rolled_back=False)
    result["champion"] = registry.alias_version(settings, registry.CHAMPION)
    reports.write_report(settings.reports_dir, "pipeline", result)
    _say(f"pipeline done: {result['decision']}; champion is {_describe(result['champion'])}")
    return result


# GitHub Actions: what the workflows call around the stages (see github.py).


def run_comment(settings: Settings, args: argparse.Namespace) -> dict:
    """The pull request comment (hidden marker first) from the reports; the same in the job summary."""
    from . import github

    env = os.environ
    source, notes = github.champion_source(env)
    context = github.Context(
        title="Model report",
        run_url=github.run_url(env),
        artifact_url=args.artifact_url or env.get("ARTIFACT_URL") or None,
        sha=env.get("PR_HEAD_SHA") or env.get("GITHUB_SHA"),
        champion_source=source,
        notes=notes,
    )
    found = github.load_reports(settings.reports_dir)
    report = github.render(found, settings.greater_is_better, context, ("evaluate", "validate"))
    body = github.comment_body(report, context.run_url)
    path = Path(args.output or settings.reports_dir / "comment.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    github.append_summary(report, env)
    _say(f"wrote the pull request comment to {path} ({github.utf16_length(body)} characters)")
    return {"comment": str(path)}


def run_summary(settings: Settings, args: argparse.Namespace) -> dict:
    """Render reports into $GITHUB_STEP_SUMMARY (printed when not in a GitHub Actions step)."""
    from . import github

    env = os.environ
    sections = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    unknown = sorted(set(sections) - set(github.SECTIONS))
    if unknown:
        raise SettingsError(f"--sections: unknown {unknown}; choose from {sorted(github.SECTIONS)}")
    context = github.Context(
        title=args.title,
        run_url=github.run_url(env),
        artifact_url=args.artifact_url or env.get("ARTIFACT_URL") or None,
        sha=env.get("GITHUB_SHA"),
    )
    found = github.load_reports(settings.reports_dir)
    report = github.render(found, settings.greater_is_better, context, sections)
    if not github.append_summary(report, env):
        print(report)
    return {"summary": report}


def run_outputs(settings: Settings, args: argparse.Namespace) -> dict:
    """Write the values later steps and jobs need from a report to $GITHUB_OUTPUT."""
    from . import github

    values = github.outputs_from(args.stage, reports.read_report(settings.reports_dir, args.stage))
    print(github.write_outputs(values, os.environ), end="")
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
    from . import github

    env = os.environ
    params = settings.params
    locations = {
        "data": params.data.source,
        "input": settings.env.batch_input or params.batch.input,
        "output": settings.env.batch_output or params.batch.output,
        "prediction_log": params.monitoring.prediction_log,
        "labels": params.monitoring.labels,
    }
    check = github.check_config(args.purpose, env, locations, settings.project_dir)
    github.write_outputs(check.outputs, env)
    if not github.append_summary(check.summary(), env):
        print(check.summary())
    _say(
        f"{args.purpose}: "
        + ("configured" if check.configured else "not configured (see the job summary)")
    )
    return {"configured": check.configured, **check.outputs}


def run_baseline_params(settings: Settings, args: argparse.Namespace) -> dict:
    """Params for training the base branch's code on this checkout's data (pull requests, no server)."""
    import yaml

    from . import github

    base_dir = Path(args.base_dir)
    source = base_dir / "params.yaml"
    try:
        base = yaml.safe_load(source.read_text())
        params = github.baseline_params(
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
                help="comma-separated: evaluate, validate, smoke, promote, rollback, pipeline, "
                "batch, rollout",
            )
        if name == "outputs":
            command.add_argument(
                "stage", choices=["train", "evaluate", "build", "promote", "rollback"]
            )
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
    if args.command == "pipeline":
        args.version = None
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
