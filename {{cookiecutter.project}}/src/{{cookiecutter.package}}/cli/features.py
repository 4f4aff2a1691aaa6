"""The feature store's command: `materialize` loads the online store the service reads from."""

from __future__ import annotations

from datetime import datetime

from .. import reports
from ..settings import Settings
from .command import Command, argument, say


def materialize(settings: Settings, end: datetime | None) -> dict:
    from .. import feature_store

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


COMMANDS = (
    Command(
        "materialize",
        "apply feature_repo's definitions and load the online store with the latest features",
        materialize,
        (
            argument(
                "--end",
                type=datetime.fromisoformat,
                help="load values up to this time (ISO 8601; default: now)",
            ),
        ),
    ),
)
