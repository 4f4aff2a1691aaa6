"""Check a data frame against a reviewed great-expectations suite before anything trains on it.

The suite is a JSON file in the repository, so a change to what counts as good data is a reviewed
diff. `suggest.py` writes a first one from data you trust; edit it by hand from there.
great-expectations takes seconds to import, so it is imported here, lazily, and nowhere else.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import SuiteError
from .reports import cell, markdown_table

if TYPE_CHECKING:
    import great_expectations as gx

MAX_FAILURE_ROWS = 50  # failures listed in the Markdown report; the rest are counted
# Keyword arguments that say how GX runs a check, not what it checks.
_RUN_KWARGS = {"batch_id", "column", "result_format", "catch_exceptions", "include_config", "meta"}
_TYPE_CHECKS = {"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"}
_PHRASES = {
    "expect_column_values_to_not_be_null": "not null",
    "expect_column_to_exist": "column present",
    "expect_column_values_to_be_unique": "unique values",
}


def _gx():
    """Import great-expectations with its usage statistics off (they would phone home)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


def load_suite(path: Path | str) -> gx.ExpectationSuite:
    """Read a suite JSON file (as written by `write_suite`) without needing a GX project folder."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SuiteError(f"{path}: expectation suite not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise SuiteError(f"{path}: not a readable JSON file: {error}") from None
    if not isinstance(raw, dict):
        raise SuiteError(
            f"{path}: an expectation suite is a JSON object, found {type(raw).__name__}"
        )
    gx = _gx()
    try:
        return gx.ExpectationSuite(**raw)
    except Exception as error:  # GX raises TypeError, pydantic and its own errors for bad configs
        raise SuiteError(f"{path}: not a valid expectation suite: {error}") from None


def validate(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> dict[str, Any]:
    """Run every expectation on the whole frame and return a plain, JSON-friendly report."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("frame")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(suite)
    failures = [_failure(check, frame) for check in result.results if not check.success]
    failures.sort(key=lambda item: (item["column"] is not None, item["column"] or ""))
    return {
        "success": bool(result.success),
        "evaluated": len(result.results),
        "failed": len(failures),
        "rows": len(frame),
        "failures": failures,
    }


def _failure(check, frame: pd.DataFrame) -> dict[str, Any]:
    config = check.expectation_config
    column = config.kwargs.get("column")
    outcome = check.result or {}
    count = outcome.get("unexpected_count")
    if column is not None and column not in frame.columns:
        observed: Any = "column not found"
    elif "observed_value" in outcome:
        observed = _observed_value(config.type, outcome)
    elif config.type in _TYPE_CHECKS and "unexpected_count" in outcome:
        # Text read by pandas 2 is an `object` column, which great-expectations judges value by
        # value (pandas 3's `str` it judges as a column): a type belongs to the column either way.
        observed, count = str(frame[column].dtype), None
    elif "unexpected_count" in outcome:
        observed = _sample(outcome.get("partial_unexpected_list", []))
    else:
        observed = f"error: {_error_message(check.exception_info)}"
    return {
        "expectation": config.type,
        "column": column,
        "unexpected_count": None if count is None else int(count),
        "observed": observed,
        "expected": _expected(config.type, config.kwargs),
    }


def _observed_value(kind: str, outcome: dict) -> Any:
    if kind == "expect_table_columns_to_match_set":
        mismatched = outcome.get("details", {}).get("mismatched", {})
        return {key: sorted(mismatched.get(key, [])) for key in ("missing", "unexpected")}
    return _plain(outcome["observed_value"])


def _sample(values: list, limit: int = 5) -> list:
    """A few distinct offending values; NaN becomes None so the report stays valid JSON."""
    seen: list = []
    for value in map(_plain, values):
        if value not in seen:
            seen.append(value)
        if len(seen) == limit:
            break
    return seen


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _error_message(info: dict | None) -> str:
    """GX reports errors either flat or keyed by metric; either way, the first message."""
    info = info or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [entry.get("exception_message") for entry in entries if isinstance(entry, dict)]
    return next((message for message in messages if message), "the check could not run")


def _expected(kind: str, kwargs: dict) -> str:
    """What the expectation asks for, in a few words, for people reading the report."""
    shown = {key: value for key, value in kwargs.items() if key not in _RUN_KWARGS}
    parts = []
    if "min_value" in shown or "max_value" in shown:
        low, high = shown.pop("min_value", None), shown.pop("max_value", None)
        if low is not None and high is not None:
            parts.append(f"between {_number(low)} and {_number(high)}")
        elif low is not None:
            parts.append(f">= {_number(low)}")
        elif high is not None:
            parts.append(f"<= {_number(high)}")
        for key in ("strict_min", "strict_max"):
            shown.pop(key, None)
    if "column_set" in shown:
        columns = shown.pop("column_set")
        exact = shown.pop("exact_match", True)
        parts.append(f"{'exactly ' if exact else 'at least '}the {len(columns)} suite columns")
    if "value_set" in shown:
        parts.append(f"in {_short(shown.pop('value_set'))}")
    if "type_" in shown:
        parts.append(f"type {shown.pop('type_')}")
    if "type_list" in shown:
        parts.append(f"type in {_short(shown.pop('type_list'))}")
    mostly = shown.pop("mostly", None)
    parts.extend(f"{key}={_short(value)}" for key, value in sorted(shown.items()))
    if not parts:
        parts.append(_PHRASES.get(kind) or kind.removeprefix("expect_").replace("_", " "))
    if mostly is not None and mostly < 1:
        parts.append(f"(for at least {mostly:.0%} of rows)")
    return " ".join(parts)


def _number(value: Any) -> str:
    """GX stores bounds as floats; 3 reads better than 3.0."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _short(value: Any, limit: int = 60) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple | set) else str(value)
    text = f"[{text}]" if isinstance(value, list | tuple | set) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def markdown(report: Mapping[str, Any]) -> str:
    """The report for people: `reports/validate.md`, the pull request comment and job summaries.

    Data values reach the table through `cell`: the data comes from the pull request and can hold
    anything.
    """
    evaluated, rows = report.get("evaluated", "?"), report.get("rows", "?")
    if report.get("success"):
        return f"### Data validation: passed\n\nAll {evaluated} expectations hold on {rows} rows."
    failures = report.get("failures") or []
    shown = failures[:MAX_FAILURE_ROWS]
    lines = [
        "### Data validation: **FAILED**",
        "",
        f"{report.get('failed', len(failures))} of {evaluated} expectations failed on {rows} rows.",
        "",
        markdown_table(
            ["expectation", "column", "unexpected rows", "expected", "observed"],
            [
                [
                    f"`{cell(item.get('expectation'))}`",
                    "(table)" if item.get("column") is None else f"`{cell(item['column'])}`",
                    "" if item.get("unexpected_count") is None else item["unexpected_count"],
                    cell(item.get("expected", "")),
                    cell(_observed(item.get("observed"))),
                ]
                for item in shown
            ],
            "llrll",
        ),
    ]
    if len(failures) > len(shown):
        lines += [
            "",
            f"... and {len(failures) - len(shown)} more failures in `reports/validate.json`.",
        ]
    return "\n".join(lines)


def _observed(observed: Any) -> str:
    """What GX observed, in words: a dict as `key: value; ...`, lists and long values shortened."""
    if isinstance(observed, dict):
        return "; ".join(f"{key}: {_short(value)}" for key, value in observed.items() if value)
    if isinstance(observed, list):
        return _short(["null" if value is None else repr(value) for value in observed])
    return _short(observed, limit=80)


def write_suite(suite: dict[str, Any], path: Path | str) -> Path:
    """Write a suite as it is committed: indented, sorted keys, so diffs stay small and stable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, sort_keys=True) + "\n")
    return path
