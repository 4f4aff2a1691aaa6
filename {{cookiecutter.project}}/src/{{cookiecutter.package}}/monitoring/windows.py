"""Time windows: what `drift` and `performance` judge, and the streak of flagged windows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from ..errors import SettingsError
from ..prediction_log import LOGGED_AT


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime; a time without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SettingsError(
            f"{what}: {text!r} is not an ISO 8601 time (e.g. 2026-01-31T06:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def time_range(
    since: str | None, until: str | None, default_hours: float, now: datetime | None = None
) -> Window:
    """[since, until) from the command line; until defaults to now, since to `default_hours` before."""
    end = parse_time(until, "--until") if until else (now or datetime.now(UTC))
    start = parse_time(since, "--since") if since else end - timedelta(hours=default_hours)
    if start >= end:
        raise SettingsError(f"--since {start.isoformat()} is not before --until {end.isoformat()}")
    return Window(start, end)


def windows(within: Window, hours: float) -> list[Window]:
    """Consecutive windows of `hours` ending at `within.end`, oldest first; the first may be shorter."""
    step, found, end = timedelta(hours=hours), [], within.end
    while end > within.start:
        found.append(Window(max(end - step, within.start), end))
        end -= step
    return found[::-1]


def rows_in(log: pd.DataFrame, window: Window) -> pd.DataFrame:
    times = log[LOGGED_AT]
    return log[(times >= pd.Timestamp(window.start)) & (times < pd.Timestamp(window.end))]


def consecutive_latest(flags: list[bool | None]) -> int:
    """How many of the latest judged windows in a row were flagged; unjudged windows (None) are skipped,
    since labels arrive late and a quiet hour says nothing either way."""
    count = 0
    for flag in reversed(flags):
        if flag is None:
            continue
        if not flag:
            break
        count += 1
    return count


def streak(flags: list[bool | None], needed: int) -> dict:
    streak = consecutive_latest(flags)
    return {
        "consecutive_windows": streak,
        "retrain_after_windows": needed,
        "retrain": streak >= needed,
    }


def streak_lines(result: dict, word: str) -> list[str]:
    return [
        f"Latest windows {word} in a row: {result['consecutive_windows']} "
        f"(retraining at {result['retrain_after_windows']}): "
        + ("**retrain**" if result["retrain"] else "no retraining"),
    ]
