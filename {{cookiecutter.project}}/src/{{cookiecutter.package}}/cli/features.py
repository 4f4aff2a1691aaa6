"""The feature store's command: `materialize` loads the online store the service reads from."""

from __future__ import annotations

from datetime import datetime

from .. import pipeline
from ..settings import Settings
from .command import Command, argument, say


def materialize(settings: Settings, end: datetime | None) -> dict:
    return pipeline.materialize(settings, say, end)


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
