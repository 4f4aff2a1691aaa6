"""The stages of a model's way to production, and `run` to take them in order.

Each stage does its work, writes `reports/<stage>.json` (and `.md` for people), tells `say` what
people read in the log (the CLI passes its printer), and returns its result. A check that fails (invalid
data, a gate rejection under `fail_on_reject`, a failed smoke test) raises CheckFailed.

Stage modules are imported inside the stages, so a command loads only the stack it needs (MLflow,
great-expectations and BentoML each take seconds to import).
"""

from __future__ import annotations

from collections.abc import Callable
{%- if cookiecutter.feature_store == "feast" %}
from datetime import datetime
{%- endif %}
from typing import TYPE_CHECKING

from . import data, model_card, reports
from .errors import CheckFailed, StateError
from .settings import Settings

if TYPE_CHECKING:
    from .deploy.smoke import LoadTest
    from .registry import Registry

Say = Callable[[str], None]


def validate(settings: Settings, say: Say) -> dict:
    from . import validation

    source = settings.resolve(settings.params.data.source)
    frame = data.training_table(settings)
    suite = validation.load_suite(settings.resolve(settings.params.validation.suite))
    result = {
        **validation.validate(frame, suite),
        "source": source,
        "fingerprint": data.fingerprint(frame),
    }
    reports.write_report(settings.reports_dir, "validate", result, validation.markdown(result))
    if not result["success"]:
        raise CheckFailed(
            f"data invalid: {result['failed']} of {result['evaluated']} expectations failed; "
            f"see {settings.reports_dir / 'validate.md'}"
        )
    say(f"data valid: {result['evaluated']} expectations on {result['rows']} rows")
    return result


def train(settings: Settings, registry: Registry, say: Say, alias: bool = True) -> dict:
    from . import training

    validate(settings, say)  # never register a model trained on data that failed validation
    frame = data.training_table(settings)
    trained = training.train(settings, registry, frame, alias=alias)
    result = {
        "model_version": trained.model_version,
        "run_id": trained.run_id,
        "holdout_metrics": trained.metrics,
        "data_fingerprint": trained.data_fingerprint,
        "params_hash": trained.params_hash,
        "git_sha": trained.git_sha,
        "dropped_rows_missing_target": trained.dropped_rows_missing_target,
    }
    reports.write_report(settings.reports_dir, "train", result)
    model_card.write_report(settings.reports_dir, trained.card)
    metric = settings.params.gate.primary_metric
    say(
        f"trained v{trained.model_version} ({settings.params.model.estimator}), "
        f"holdout {metric} {trained.metrics[metric]:.4f}; "
        + (f"alias challenger -> v{trained.model_version}" if alias else "no alias moved")
    )
    return result


def evaluate(
    settings: Settings,
    registry: Registry,
    say: Say,
    version: int | None = None,
    fail_on_reject: bool = False,
) -> dict:
    """Score the candidate (`version`, default the challenger) and the champion; apply the gate."""
    from . import evaluation
    from .registry import CHALLENGER, CHAMPION

    params = settings.params
    candidate = version or registry.alias_version(CHALLENGER)
    if candidate is None:
        raise StateError("no challenger to evaluate: run `train` first or pass --version")
    champion = registry.alias_version(CHAMPION)
    if champion == candidate:
        raise StateError(f"v{candidate} is already the champion; nothing to compare")
    source = settings.resolve(params.data.source)
    frame = data.training_table(settings)
    missing_target = data.missing_targets(frame, params.data, source)
    _, _, x_holdout, y_holdout = data.train_holdout_split(frame, params.data, source)
    # Every column of the holdout rows: a champion trained on other features reads its own.
    holdout = data.model_input(frame.loc[x_holdout.index].drop(columns=[params.data.target]))
    candidate_model = registry.load_model(candidate)
    comparison = evaluation.compare(
        params.task,
        params.gate,
        settings.greater_is_better,
        holdout,
        y_holdout,
        (candidate, candidate_model),
        None if champion is None else (champion, registry.load_model(champion)),
    )
    plots = evaluation.plot(
        candidate_model,
        x_holdout,
        y_holdout,
        params.task,
        params.gate,
        settings.reports_dir / "plots",
    )
    result = {
        **comparison.to_dict(),
        "data_fingerprint": data.fingerprint(frame),
        "dropped_rows_missing_target": missing_target,
        "plots": [str(path) for path in plots],
    }
    markdown = evaluation.markdown(result, settings.greater_is_better)
    reports.write_report(settings.reports_dir, "evaluate", result, markdown)
    registry.log_evaluation(candidate, comparison, plots)
    refresh_card(settings, registry, candidate, result, say)
    say(f"gate: {comparison.decision} v{candidate}: {comparison.reasons[0]}")
    if comparison.decision == evaluation.REJECT and fail_on_reject:
        raise CheckFailed(f"gate rejected v{candidate} (--fail-on-reject)")
    return result


def refresh_card(
    settings: Settings, registry: Registry, version: int, evaluated: dict, say: Say
) -> None:
    """The card of `version` with the gate's decision, logged with it again and written to reports/
    (which the pull request comment links)."""
    card = model_card.read(registry, version)
    if card is None:
        say(f"v{version} has no model card (trained before model cards): none refreshed")
        return
    card = model_card.with_gate(card, evaluated)
    model_card.log(registry, card)
    model_card.write_report(settings.reports_dir, card)


def approved_version(registry: Registry, evaluated: dict, version: int | None) -> int:
    """The version the gate approved (its evaluate report); `version`, when named, must be it.

    Deploys name the version their own gate approved: `challenger` may have moved since (another
    run trained meanwhile), and promoting whatever it points to would ship an unreviewed model. The
    registry's record of the gate's verdict must agree with the report.
    """
    from .evaluation import PROMOTE

    candidate = evaluated["candidate_version"]
    if version is not None and version != candidate:
        raise StateError(
            f"the gate's evaluation is of v{candidate}, not v{version}; refusing to promote v{version}"
        )
    if evaluated["decision"] != PROMOTE:
        raise CheckFailed(f"the gate rejected v{candidate}; not promoting")
    recorded = registry.gate_decision(candidate)
    if recorded != PROMOTE:
        raise StateError(
            f"the registry records no approval of v{candidate} by the gate "
            f"(gate_decision: {recorded}); evaluate it again"
        )
    return candidate


def promote(settings: Settings, registry: Registry, say: Say, version: int | None = None) -> dict:
    """Promote what the last evaluation approved (`version`, when named, must be it), only if the
    champion has not moved since."""
    from .registry import describe

    evaluated = reports.read_report(settings.reports_dir, "evaluate")
    approved = approved_version(registry, evaluated, version)
    why = "; ".join(evaluated["reasons"])
    result = registry.promote(approved, evaluated["champion_version"], why=why)
    reports.write_report(settings.reports_dir, "promote", result)
    say(f"champion -> v{approved} (previous: {describe(result['previous'])})")
    return result


def rollback(
    settings: Settings,
    registry: Registry,
    say: Say,
    why: str,
    to_version: int | None = None,
    if_champion: int | None = None,
) -> dict:
    """Move champion back; with `if_champion` N, undo the promotion of vN and only that."""
    if if_champion is None:
        result = registry.rollback(why=why, to_version=to_version)
    else:
        result = registry.undo_promotion_if_champion(if_champion, why=why, to_version=to_version)
    reports.write_report(settings.reports_dir, "rollback", result)
    if result.get("skipped"):
        say(result["why"])
    elif result["champion"] is None:
        say(f"champion alias removed (v{if_champion} was the first champion)")
    else:
        say(f"champion -> v{result['champion']} (rolled back from v{result['rolled_back_from']})")
    return result


def build(
    settings: Settings, registry: Registry, version: int, say: Say, export: str | None = None
) -> dict:
    """The bento of `version` (and, with `export`, its archive for another job)."""
    from .deploy import bento

    result = {"bento": bento.build(settings, registry, version), "model_version": version}
    base_image = bento.docker_options(settings).get("base_image")
    if base_image and not bento.pinned_by_digest(base_image):
        result["unpinned_base_image"] = base_image
    if export:
        result["archive"] = bento.export_bento(settings, result["bento"], export)
    reports.write_report(settings.reports_dir, "build", result)
    say(f"built bento {result['bento']} with model v{version}")
    return result


def smoke(
    settings: Settings,
    registry: Registry,
    version: int,
    say: Say,
    *,
    bento: str | None = None,
    url: str | None = None,
    wait_seconds: float = 0,
    load: LoadTest | None = None,
) -> dict:
    """Smoke-test the server at `url` (first waiting up to `wait_seconds` for it to serve
    `version`), or start `bento`, test it and stop it; `load` adds a bounded load test."""
    from . import loadtest
    from .deploy import server, smoke

    if url:
        if wait_seconds:
            loadtest.wait_for_version(url, version, wait_seconds, headers=settings.client_headers())
        result = smoke.run(settings, registry, url, version, load)
    else:
        with server.serve(settings, bento) as running:
            result = smoke.run(
                settings, registry, running.url, version, load, grpc_address=running.grpc_address
            )
    reports.write_report(settings.reports_dir, "smoke", result, smoke.markdown(result))
    if not result["passed"]:
        failed = [check["name"] for check in result["checks"] if not check["passed"]]
        raise CheckFailed(f"smoke test failed: {', '.join(failed)}")
    say(f"smoke test passed against {result['url']} (v{version})")
    return result


{%- if cookiecutter.feature_store == "feast" %}


def materialize(settings: Settings, say: Say, end: datetime | None = None) -> dict:
    """Apply feature_repo's definitions and load the online store up to `end` (default now)."""
    from . import feature_store

    loaded = feature_store.materialize(settings, end)
    for part in loaded:
        say(f"materialized {part.view}: {part.start.isoformat()} .. {part.end.isoformat()}")
    result = {
        "repo": settings.params.feature_store.repo,
        "views": [
            {"view": part.view, "start": part.start.isoformat(), "end": part.end.isoformat()}
            for part in loaded
        ],
    }
    reports.write_report(settings.reports_dir, "materialize", result)
    return result
{%- endif %}


def run(settings: Settings, registry: Registry, say: Say, fail_on_reject: bool = False) -> dict:
    """validate -> train -> evaluate -> (promote -> build -> serve + smoke), rolling back on failure."""
    from . import evaluation
    from .registry import CHAMPION, describe

    version = train(settings, registry, say)["model_version"]
    evaluated = evaluate(settings, registry, say, version=version, fail_on_reject=fail_on_reject)
    result = {"model_version": version, "decision": evaluated["decision"], "deployed": False}
    if evaluated["decision"] == evaluation.PROMOTE:
        promotion = promote(settings, registry, say, version=version)
        try:
{%- if cookiecutter.feature_store == "feast" %}
            if settings.params.feature_store is not None:  # /predict_entity reads the online store
                materialize(settings, say)
{%- endif %}
            built = build(settings, registry, version, say)
            smoke(settings, registry, version, say, bento=built["bento"])
        except Exception as failure:
            rolled = registry.revert_promotion(
                promotion, why=f"deployment of v{version} failed: {failure}"
            )
            result.update(rolled_back=True, failure=str(failure), champion=rolled["champion"])
            reports.write_report(settings.reports_dir, "pipeline", result)
            raise CheckFailed(
                f"v{version} failed after promotion ({failure}); "
                f"champion is back to {describe(rolled['champion'])}"
            ) from failure
        result.update(deployed=True, rolled_back=False)
    result["champion"] = registry.alias_version(CHAMPION)
    reports.write_report(settings.reports_dir, "pipeline", result)
    say(f"pipeline done: {result['decision']}; champion is {describe(result['champion'])}")
    return result
