"""The loop's stages: validate, train, evaluate, promote, rollback, pipeline; and around them
batch scoring, the registry's history, a version's model card and a starting expectation suite.
`pipeline.py` does the work."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import data, pipeline, reports
from ..profile import categorical_features
from ..settings import Settings
from .command import (
    FAIL_ON_REJECT,
    VERSION,
    Command,
    argument,
    open_registry,
    optional_int,
    say,
)


def validate(settings: Settings) -> dict:
    return pipeline.validate(settings, say)


def train(settings: Settings, no_alias: bool) -> dict:
    return pipeline.train(settings, open_registry(settings), say, alias=not no_alias)


def evaluate(settings: Settings, version: int | None, fail_on_reject: bool) -> dict:
    return pipeline.evaluate(
        settings, open_registry(settings), say, version=version, fail_on_reject=fail_on_reject
    )


def promote(settings: Settings, version: int | None) -> dict:
    return pipeline.promote(settings, open_registry(settings), say, version=version)


def rollback(
    settings: Settings, to_version: int | None, reason: str, if_champion: int | None
) -> dict:
    """Move champion back; with --if-champion N, undo the promotion of vN and only that.

    The guarded form is what a deploy workflow runs when anything after its promotion failed (see
    `Registry.undo_promotion_if_champion`).
    """
    return pipeline.rollback(
        settings,
        open_registry(settings),
        say,
        why=reason,
        to_version=to_version,
        if_champion=if_champion,
    )


def run_pipeline(settings: Settings, fail_on_reject: bool) -> dict:
    return pipeline.run(settings, open_registry(settings), say, fail_on_reject)


def batch(
    settings: Settings,
    version: int | None,
    input_location: str | None,
    output_location: str | None,
    engine: str | None,
) -> dict:
    """Score a file with the champion (or --version) on this machine or with Spark."""
    params = settings.params.batch
    engine = engine or params.engine
    source = settings.resolve(input_location or params.input)
    destination = settings.resolve(output_location or params.output)
    registry = open_registry(settings)
    version = registry.version_or_champion(version)
    categorical = categorical_features(registry.feature_profile(version))
    if engine == "spark":
        from ..batch import spark

        with tempfile.TemporaryDirectory() as folder:
            verified = registry.download_verified(version, folder)
            session = spark.start_session(params.spark_master, params.spark_conf)
            result = spark.score_file(session, verified, version, categorical, source, destination)
    else:
        from ..batch import chunked

        chunked.use_compact_memory_pool()
        model = registry.load_model(version)
        features = list(model.feature_names_in_)
        result = chunked.score_file(
            model, features, version, source, destination, params.chunk_rows, categorical
        )
    result = {"engine": engine, **result}
    reports.write_report(settings.reports_dir, "batch", result)
    say(f"scored {result['rows']} rows with v{version} ({engine}) -> {result['output']}")
    return result


def batch_submit(
    settings: Settings, version: int | None, input_location: str | None, output_location: str | None
) -> dict:
    """Score on EMR Serverless (batch.emr_serverless) and wait; the report is written whatever the end."""
    from ..batch import emr
    from ..errors import SettingsError

    where = settings.params.batch.emr_serverless
    if where is None:
        raise SettingsError(
            f"{settings.params_file.name}: batch.emr_serverless is not set; `batch` scores here"
        )
    registry = open_registry(settings)
    run = {
        "input": input_location or settings.params.batch.input,
        "output": output_location or settings.params.batch.output,
        "model_name": settings.params.registry.model_name,
        "model_version": registry.version_or_champion(version),
    }
    say(f"submitting v{run['model_version']} to EMR Serverless application {where.application_id}")
    result = emr.submit(emr.client(), where, run, settings.tracking_uri)
    reports.write_report(settings.reports_dir, "batch", result)
    say(f"job run {result['job_run_id']}: {result['state']} after {result['seconds']} s")
    emr.require_success(result)
    return result


def history(settings: Settings) -> dict:
    registry = open_registry(settings)
    entries = registry.history()
    result = {"aliases": registry.aliases(), "history": entries}
    columns = ("sequence", "at", "by", "action", "alias", "before", "after", "why")
    markdown = reports.markdown_table(
        ["#", "when", "who", "action", "alias", "from", "to", "why"],
        [[entry[name] for name in columns] for entry in entries],
    )
    reports.write_report(settings.reports_dir, "history", result, markdown)
    print(markdown)
    return result


def model_card(settings: Settings, version: int | None) -> dict:
    """The model card of the champion (or --version), as logged with it, in reports/."""
    from .. import model_card as cards
    from ..errors import StateError

    registry = open_registry(settings)
    version = registry.version_or_champion(version)
    card = cards.read(registry, version)
    if card is None:
        raise StateError(
            f"v{version} has no model card ({cards.CARD_JSON} in its run's artifacts): "
            "it was trained before model cards; train it again"
        )
    path = cards.write_report(settings.reports_dir, card)
    say(f"model card of v{version}: {path} and {path.with_suffix('.md')}")
    return card


def suggest_suite(settings: Settings, use: bool, force: bool) -> dict:
    """Profile the data into a starting suite named after the data file, to review and commit;
    with --use, point validation.suite at it."""
    from .. import suggest, validation

    source, params_file = settings.params.data.source, settings.params_file
    location = suggest.suite_location(source)
    path = Path(settings.resolve(location))
    if not force:
        suggest.refuse_other_data(path, source)
    frame = data.training_table(settings)
    suite = suggest.suggest_suite(frame, settings.params.data, source)
    validation.write_suite(suite, path)
    meta = suite["meta"]
    say(f"wrote {len(suite['expectations'])} expectations to {path}; review them before committing")
    for kind in (suggest.NUMERIC, suggest.CATEGORICAL, suggest.TEXT):
        if named := [name for name, found in meta["columns"].items() if found == kind]:
            say(f"{kind} columns: {', '.join(named)}")
    for name, reason in meta["drop_advice"].items():
        say(f"consider adding {name!r} to data.drop in {params_file.name}: {reason}")
    if use:
        suggest.point_validation_suite(params_file, location)
        say(f"validation.suite in {params_file} is now {location}")
    elif settings.params.validation.suite != location:
        say(
            f"to validate with it, set validation.suite: {location} in {params_file.name} (or --use)"
        )
    return {
        "suite": str(path),
        "used": use,
        **{key: meta[key] for key in ("columns", "drop_advice")},
    }


BATCH_LOCATIONS = (
    argument("--input", dest="input_location", help="default: batch.input in params"),
    argument("--output", dest="output_location", help="default: batch.output in params"),
)

COMMANDS = (
    Command("validate", "check the data against the expectation suite", validate),
    Command(
        "train",
        "validate, train, register, and alias the new version as challenger",
        train,
        (
            argument(
                "--no-alias",
                action="store_true",
                help="register only (pull request runs: only deploys move the model's aliases)",
            ),
        ),
    ),
    Command(
        "evaluate",
        "score challenger and champion on the same holdout; apply the gate",
        evaluate,
        (VERSION, FAIL_ON_REJECT),
    ),
    Command(
        "promote",
        "make the version the gate approved the champion (compare-and-set)",
        promote,
        (
            argument(
                "--version",
                type=int,
                help="the version the gate approved; any other is refused (deploys always name it)",
            ),
        ),
    ),
    Command(
        "rollback",
        "move champion back to previous (or --to-version)",
        rollback,
        (
            argument(
                "--to-version", type=optional_int, help="default (or empty): the `previous` alias"
            ),
            argument("--reason", default="manual rollback", help="recorded in history"),
            argument(
                "--if-champion",
                type=optional_int,
                help="undo the promotion of this version only if it is still the champion",
            ),
        ),
    ),
    Command(
        "batch",
        "score a file with the champion (or --version)",
        batch,
        (
            VERSION,
            *BATCH_LOCATIONS,
            argument(
                "--engine",
                choices=["pandas", "spark"],
                help="default: batch.engine in params (spark: docs/batch.md)",
            ),
        ),
    ),
    Command(
        "batch-submit",
        "score a file with the champion (or --version) on EMR Serverless, and wait",
        batch_submit,
        (
            VERSION,
            *BATCH_LOCATIONS,
        ),
        more_help=" Needs batch.emr_serverless in params (docs/emr-serverless.md).",
    ),
    Command("history", "show every recorded alias move", history),
    Command(
        "model-card",
        "write the model card of the champion (or --version) to reports/model_card.{json,md}",
        model_card,
        (VERSION,),
    ),
    Command(
        "suggest-suite",
        "write a starting expectation suite from the data, validation/<data file name>.json",
        suggest_suite,
        (
            argument("--use", action="store_true", help="point validation.suite in params at it"),
            argument(
                "--force",
                action="store_true",
                help="replace the file even if it holds the suite of other data",
            ),
        ),
    ),
    Command(
        "pipeline",
        "the whole loop: validate, train, evaluate, promote, deploy, verify",
        run_pipeline,
        (FAIL_ON_REJECT,),
    ),
)
