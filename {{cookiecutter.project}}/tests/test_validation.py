"""Data validation with real great-expectations: the committed suite, and each kind of bad data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import great_expectations as gx
import pandas as pd
import pytest

from {{ cookiecutter.package }} import data, suggest, validation
from {{ cookiecutter.package }}.errors import SuiteError
from {{ cookiecutter.package }}.settings import Settings, load_settings

from .conftest import PROJECT_DIR


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The project's own params, read only: validation needs no scratch copy and no MLflow store."""
    return load_settings(PROJECT_DIR / "params.yaml")


@pytest.fixture
def frame(settings: Settings) -> pd.DataFrame:
    return data.training_table(settings)


@pytest.fixture(scope="module")
def suite_path(settings: Settings) -> Path:
    return Path(settings.resolve(settings.params.validation.suite))


@pytest.fixture(scope="module")
def suite(suite_path: Path) -> gx.ExpectationSuite:
    return validation.load_suite(suite_path)


@pytest.fixture
def feature(settings, frame) -> str:
    """A float feature: breaking it changes nothing but the check under test (no dtype change)."""
    target = settings.params.data.target
    return next(c for c in frame.columns if c != target and frame[c].dtype == "float64")


def failures(report: dict) -> list[tuple]:
    return [(f["expectation"], f["column"], f["unexpected_count"]) for f in report["failures"]]


def test_bundled_data_passes(frame, suite):
    report = validation.validate(frame, suite)
    assert report == {
        "success": True,
        "evaluated": len(suite.expectations),
        "failed": 0,
        "rows": len(frame),
        "failures": [],
    }
    assert "passed" in validation.markdown(report)


def test_injected_nulls_are_counted(frame, suite, feature):
    frame.loc[[3, 10, 42], feature] = None
    report = validation.validate(frame, suite)
    assert not report["success"]
    assert failures(report) == [("expect_column_values_to_not_be_null", feature, 3)]
    assert report["failures"][0]["expected"] == "not null"


def test_out_of_range_values_are_counted(frame, suite, feature):
    frame.loc[[1, 2, 3, 4], feature] = frame[feature].max() * 100
    report = validation.validate(frame, suite)
    assert failures(report) == [("expect_column_values_to_be_between", feature, 4)]
    assert report["failures"][0]["observed"] == [frame[feature].max()]
    assert report["failures"][0]["expected"].startswith("between ")


def test_unknown_labels_or_out_of_range_targets_fail(settings, frame, suite):
    target = settings.params.data.target
    frame.loc[[0, 1], target] = int(frame[target].max()) * 100 + 7
    report = validation.validate(frame, suite)
    expected = {
        "classification": "expect_column_values_to_be_in_set",
        "regression": "expect_column_values_to_be_between",
    }[settings.params.task]
    assert failures(report) == [(expected, target, 2)]


def test_a_missing_column_is_named(frame, suite, feature):
    report = validation.validate(frame.drop(columns=[feature]), suite)
    table, *per_column = report["failures"]
    assert (table["expectation"], table["column"]) == ("expect_table_columns_to_match_set", None)
    assert table["observed"] == {"missing": [feature], "unexpected": []}
    assert per_column and all(f["column"] == feature for f in per_column)
    assert all(f["observed"] == "column not found" for f in per_column)
    assert report["failed"] == 1 + len(per_column)


def test_a_wrong_type_is_named(frame, suite, feature, tmp_path):
    """One decimal comma in a numeric CSV column makes the whole column text when read back."""
    frame[feature] = frame[feature].astype(object)
    frame.loc[5, feature] = "12,5"
    path = tmp_path / "typo.csv"
    data.write_table(frame, str(path))
    report = validation.validate(data.read_table(str(path)), suite)
    by_kind = {f["expectation"]: f for f in report["failures"] if f["column"] == feature}
    wrong_type = by_kind["expect_column_values_to_be_in_type_list"]
    assert wrong_type["expected"] == "type in [float64]"
    assert wrong_type["observed"] in {"str", "object"}
    assert wrong_type["unexpected_count"] is None  # a type is a property of the column, not of rows
    assert {f["column"] for f in report["failures"]} == {feature}


def test_markdown_names_each_failure(settings, frame, suite):
    target = settings.params.data.target
    floats = [c for c in frame.columns if c != target and frame[c].dtype == "float64"]
    first, second, third = floats[:3]  # numbers, checked against bounds
    frame.loc[[0, 1, 2], first] = None
    frame.loc[[7, 8], second] = frame[second].max() * 100
    report = validation.validate(frame.drop(columns=[third]), suite)
    markdown = validation.markdown(report)
    assert "FAILED" in markdown
    assert f"{report['failed']} of {report['evaluated']} expectations failed" in markdown
    assert f"| `expect_column_values_to_not_be_null` | `{first}` | 3 |" in markdown
    assert f"| `expect_column_values_to_be_between` | `{second}` | 2 |" in markdown
    assert "| `expect_table_columns_to_match_set` | (table) |  |" in markdown
    assert f"missing: [{third}]" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(table_rows) == report["failed"]


def test_checked_in_suite_is_what_suggest_suite_writes(settings, frame, suite_path, tmp_path):
    """The committed suite and the bundled data never drift apart unnoticed."""
    params = settings.params.data
    suggested = suggest.suggest_suite(frame, params, params.source)
    assert suite_path.name == Path(suggest.suite_location(params.source)).name
    assert suggested == json.loads(suite_path.read_text())
    rewritten = validation.write_suite(suggested, tmp_path / suite_path.name)
    assert rewritten.read_text() == suite_path.read_text()
    rebuilt = gx.ExpectationSuite(**json.loads(rewritten.read_text()))
    assert len(rebuilt.expectations) == len(suggested["expectations"])


def test_suggested_bounds_accept_rows_not_profiled(settings, frame):
    """Profiled on the training rows only, the suite still accepts the holdout rows: the margin works."""
    target = settings.params.data.target
    holdout = data.holdout_mask(frame.drop(columns=[target]), settings.params.data.holdout_fraction)
    params = settings.params.data
    suggested = suggest.suggest_suite(frame[~holdout], params, params.source)
    report = validation.validate(frame, gx.ExpectationSuite(**suggested))
    assert report["success"], validation.markdown(report)


def test_unusable_suite_files_are_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(SuiteError, match=re.escape(f"{missing}: expectation suite not found")):
        validation.load_suite(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SuiteError, match=re.escape(f"{broken}: not a readable JSON file")):
        validation.load_suite(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"name": "x", "expectations": [{"type": "expect_magic"}]}))
    with pytest.raises(SuiteError, match=re.escape(f"{wrong}: not a valid expectation suite")):
        validation.load_suite(wrong)
