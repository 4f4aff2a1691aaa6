"""Profile data you trust into a starting expectation suite, named after the data file: each
column's kind, the columns worth leaving out of the model, and the expectations to review and commit.

Pure and deterministic: the same frame gives the same suite, so a test can check that the committed
suite still matches the bundled data. The kinds here decide what a column's values are checked
against (a set of values or bounds); how the model encodes a feature is training's business.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import yaml

from . import data
from .errors import SettingsError, SuiteError
from .params import DataParams
from .profile import PROFILE_MAX_CATEGORIES

# Bounds are widened by this share of the observed range on each side: they catch gross errors (unit
# mix-ups, sentinels such as -999, sign flips), not drift. Profiling 80% of the bundled rows and
# checking the rest, a 10% margin rejected 95% (breast cancer) and 33% (diabetes) of random splits;
# 50% rejected 8% and none, the misses being single extreme values in skewed features.
BOUNDS_MARGIN = 0.5
# Data that already has gaps is allowed the same share of them, and this much more.
NULL_RATE_MARGIN = 0.05
# An integer or text target with at most this many distinct values is treated as class labels.
MAX_CLASSES = 20
# Text with distinct values on more than this share of its rows is free text, not a category.
FREE_TEXT_SHARE = 0.5
SUITE_FOLDER = "validation"
NUMERIC, CATEGORICAL, TEXT = "numeric", "categorical", "free text"


def suite_location(source: str) -> str:
    """Where the suite of a data file goes, relative to params.yaml: `validation/<file stem>.json`."""
    return f"{SUITE_FOLDER}/{PurePosixPath(urlparse(source).path).stem}.json"


def column_kind(values: pd.Series) -> str:
    """numeric; categorical (text, booleans, integers with few distinct values, as codes are);
    or free text (text with mostly distinct values)."""
    present = values.dropna()
    inferred = pd.api.types.infer_dtype(present, skipna=True)
    distinct = present.nunique()
    if inferred == "boolean" or (inferred == "integer" and distinct <= PROFILE_MAX_CATEGORIES):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(values):
        return NUMERIC
    return TEXT if distinct > FREE_TEXT_SHARE * len(present) else CATEGORICAL


def drop_reason(values: pd.Series, kind: str) -> str | None:
    """Why a column had better not be a feature (it tells the model nothing that carries over to
    new rows), or None."""
    distinct = values.nunique()
    if distinct <= 1:
        return "constant: the same value on every row" if distinct else "empty: no value at all"
    if distinct == len(values) and not pd.api.types.is_float_dtype(values):
        return "a different value on every row, like an id"
    if kind == TEXT:
        return f"free text: {distinct} distinct values in {values.notna().sum()} rows"
    return None


def suggest_suite(frame: pd.DataFrame, params: DataParams, source: str) -> dict[str, Any]:
    """A suite (as a JSON-ready dict) for the data `source` holds, with what was inferred in its
    meta: every column's kind, and why to leave some of the model's features out (`data.drop`)."""
    roles = data.feature_roles([str(name) for name in frame.columns], params, source)
    kinds = {str(name): column_kind(frame[name]) for name in frame.columns}
    reasons = {
        name: drop_reason(frame[name], kinds[name]) for name in kinds if name != params.target
    }
    rows = len(frame)
    expectations = [
        _expectation("expect_table_columns_to_match_set", column_set=sorted(kinds)),
        # Half the rows hints at a cut-off export; ten times, at a runaway append or a fan-out join.
        _expectation(
            "expect_table_row_count_to_be_between", min_value=rows // 2, max_value=rows * 10
        ),
    ]
    for name, kind in kinds.items():
        values = frame[name]
        expectations += [_type_expectation(values, name), _null_expectation(values, name)]
        if name == params.target:
            expectations += _target_expectations(values, name)
        elif reasons[name] is None:
            expectations += _value_expectations(values, name, kind)
    return {
        "name": PurePosixPath(suite_location(source)).stem,
        "expectations": expectations,
        "meta": {
            "generated_by": "suggest.suggest_suite",
            "data_source": source,
            "profiled_rows": rows,
            "bounds_margin": BOUNDS_MARGIN,
            "null_rate_margin": NULL_RATE_MARGIN,
            "columns": kinds,
            "drop_advice": {
                name: reasons[name] for name in roles["features"] if reasons[name] is not None
            },
            "notes": "Generated from trusted data; review and edit by hand, then commit.",
        },
    }


def _expectation(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs}


def _type_expectation(values: pd.Series, column: str) -> dict[str, Any]:
    """The column's dtype; for an `object` column, which great-expectations judges value by value,
    the Python types of its values (str for text, bool for booleans with gaps)."""
    if values.dtype == object:
        types = sorted({type(value).__name__ for value in values.dropna()}) or ["str"]
    else:
        types = [str(values.dtype)]
    return _expectation("expect_column_values_to_be_in_type_list", column=column, type_list=types)


def _null_expectation(values: pd.Series, column: str) -> dict[str, Any]:
    nulls = int(values.isna().sum())
    if not nulls:
        return _expectation("expect_column_values_to_not_be_null", column=column)
    mostly = math.floor(round((1 - nulls / len(values) - NULL_RATE_MARGIN) * 100, 6)) / 100
    return _expectation(
        "expect_column_values_to_not_be_null", column=column, mostly=max(0.0, mostly)
    )


def _target_expectations(values: pd.Series, column: str) -> list[dict]:
    present = values.dropna()
    if not pd.api.types.is_float_dtype(values) and present.nunique() <= MAX_CLASSES:
        return [_value_set(present, column)]
    return _value_expectations(values, column, NUMERIC)


def _value_expectations(values: pd.Series, column: str, kind: str) -> list[dict]:
    present = values.dropna()
    if kind == CATEGORICAL:
        return [_value_set(present, column)]
    if kind != NUMERIC or not len(present):
        return []
    low, high = _widened(float(present.min()), float(present.max()))
    if pd.api.types.is_integer_dtype(values):
        low, high = math.floor(low), math.ceil(high)
    return [
        _expectation(
            "expect_column_values_to_be_between", column=column, min_value=low, max_value=high
        )
    ]


def _value_set(present: pd.Series, column: str) -> dict[str, Any]:
    """Every value seen, in a stable order (by type, then value: a column may mix them)."""
    values = {_plain(value) for value in present.unique()}
    ordered = sorted(values, key=lambda value: (type(value).__name__, value))
    return _expectation("expect_column_values_to_be_in_set", column=column, value_set=ordered)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars, for JSON


def _widened(low: float, high: float) -> tuple[float, float]:
    """Observed bounds widened by the margin and rounded outwards to two significant digits of the
    range, so the file reads 0.05 rather than 0.0526; never below zero for data that never was."""
    span = high - low or abs(high) or 1.0
    wide_low, wide_high = low - BOUNDS_MARGIN * span, high + BOUNDS_MARGIN * span
    if low >= 0:
        wide_low = max(wide_low, 0.0)
    exponent = math.floor(math.log10(span)) - 1
    step, digits = 10.0**exponent, max(0, -exponent)
    return (
        round(math.floor(wide_low / step) * step, digits),
        round(math.ceil(wide_high / step) * step, digits),
    )


def refuse_other_data(path: Path, source: str) -> None:
    """A suite file is replaced only by a suite of the same data (`meta.data_source`): never another
    data set's suite, nor one written by hand."""
    if not path.exists():
        return
    try:
        owner = json.loads(path.read_text()).get("meta", {}).get("data_source")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner == source:
        return
    held = f"holds the suite of {owner}" if owner else "records no data it was suggested from"
    raise SuiteError(
        f"{path} {held} (meta.data_source), not of {source}: move it aside, or pass --force to "
        "replace it"
    )


_SECTION = re.compile(r"^(?P<key>[^\s#][^:#]*):")
_SUITE_LINE = re.compile(r"^(?P<lead>[ \t]+suite:[ \t]*)(?P<value>[^#\r\n]*?)(?P<tail>[ \t]+#.*)?$")


def point_validation_suite(params_file: Path, location: str) -> None:
    """Set `validation.suite` in params.yaml by editing that one line in place, so the file's
    comments and layout survive (a YAML round trip would drop them)."""
    text = params_file.read_text()
    lines = text.splitlines(keepends=True)
    section = None
    for index, line in enumerate(lines):
        if heading := _SECTION.match(line):
            section = heading["key"].strip()
        elif section == "validation" and (found := _SUITE_LINE.match(line.rstrip("\r\n"))):
            ending = line[len(line.rstrip("\r\n")) :]
            lines[index] = f"{found['lead']}{_yaml_value(location)}{found['tail'] or ''}{ending}"
            break
    edited = "".join(lines)
    if (yaml.safe_load(edited) or {}).get("validation", {}).get("suite") != location:
        raise SettingsError(
            f"{params_file}: found no line `suite: ...` under `validation:` to point at "
            f"{location}; set validation.suite by hand"
        )
    params_file.write_text(edited)


def _yaml_value(text: str) -> str:
    """`text` as YAML reads it back: plain where it can be, else quoted."""
    return text if yaml.safe_load(f"key: {text}") == {"key": text} else json.dumps(text)
