"""suggest-suite on data the template does not bundle: the kinds it infers, what it advises leaving
out, a suite that passes on its data and names the column of a bad row, and params.yaml pointed at
it by editing one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.package }} import cli, data, suggest, validation
from {{ cookiecutter.package }}.errors import DataError, SettingsError
from {{ cookiecutter.package }}.params import DataParams

from .test_own_data import churn

SOURCE = "data/customers.csv"


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """churn's customers with what real exports hold besides, read back from a CSV as a user's
    file is: a text category with gaps, booleans with gaps, an id, free-text notes, a constant."""
    rng = np.random.default_rng(3)
    frame = churn(rng)
    rows = len(frame)
    frame.insert(0, "customer_id", [f"C{number:05d}" for number in rng.permutation(rows)])
    frame["plan"] = rng.choice(["basic", "plus", "family"], rows)
    frame["paperless"] = rng.random(rows) < 0.5
    frame["note"] = [f"asked about offer {number}" for number in rng.integers(0, 10 * rows, rows)]
    frame["country"] = "NO"
    for column in ("plan", "paperless", "note"):
        frame[column] = frame[column].astype(object)
        frame.loc[rng.random(rows) < 0.1, column] = None
    path = tmp_path_factory.mktemp("own") / "customers.csv"
    data.write_table(frame, str(path))
    return data.read_table(str(path))


def suggested(frame: pd.DataFrame, **params) -> dict:
    return suggest.suggest_suite(
        frame, DataParams(source=SOURCE, target="churned", **params), SOURCE
    )


def check(frame: pd.DataFrame, suite: dict) -> list[tuple]:
    report = validation.validate(frame, gx.ExpectationSuite(**suite))
    return [(f["expectation"], f["column"], f["unexpected_count"]) for f in report["failures"]]


def test_kinds_and_what_to_leave_out(customers):
    suite = suggested(customers)
    assert suite["name"] == "customers" and suite["meta"]["data_source"] == SOURCE
    assert suite["meta"]["columns"] == {
        "customer_id": "free text",
        "tenure_months": "numeric",
        "monthly_charges": "numeric",
        "support_calls": "categorical",  # a count with a handful of values: codes, not amounts
        "contract": "categorical",
        "churned": "categorical",
        "plan": "categorical",
        "paperless": "categorical",
        "note": "free text",
        "country": "categorical",
    }
    advice = suite["meta"]["drop_advice"]
    assert list(advice) == ["customer_id", "note", "country"]
    assert "like an id" in advice["customer_id"] and "constant" in advice["country"]
    assert advice["note"].startswith("free text")
    # Columns params already leaves out need no advice.
    assert list(suggested(customers, drop=["customer_id", "note"])["meta"]["drop_advice"]) == [
        "country"
    ]
    with pytest.raises(
        DataError, match=re.escape(f"data.target 'label' is not a column of {SOURCE}")
    ):
        suggest.suggest_suite(customers, DataParams(source=SOURCE, target="label"), SOURCE)


def test_the_suite_checks_values_gaps_and_types(customers):
    kinds = {
        (item["type"], item["kwargs"].get("column")): item["kwargs"]
        for item in suggested(customers)["expectations"]
    }
    assert kinds[("expect_column_values_to_be_in_set", "plan")]["value_set"] == [
        "basic",
        "family",
        "plus",
    ]
    assert kinds[("expect_column_values_to_be_in_set", "paperless")]["value_set"] == [False, True]
    assert kinds[("expect_column_values_to_be_in_set", "churned")]["value_set"] == ["no", "yes"]
    assert kinds[("expect_column_values_to_be_in_type_list", "plan")]["type_list"] == ["str"]
    assert kinds[("expect_column_values_to_be_in_type_list", "paperless")]["type_list"] == ["bool"]
    plan_present = customers["plan"].notna().mean()
    assert kinds[("expect_column_values_to_not_be_null", "plan")]["mostly"] == pytest.approx(
        plan_present - suggest.NULL_RATE_MARGIN, abs=0.01
    )
    assert ("expect_column_values_to_be_between", "monthly_charges") in kinds
    # Ids and free text get no value set: every new row would break it.
    assert ("expect_column_values_to_be_in_set", "customer_id") not in kinds
    assert ("expect_column_values_to_be_in_set", "note") not in kinds


def test_the_suite_passes_on_its_data_and_names_the_column_of_bad_rows(customers):
    suite = suggested(customers)
    assert check(customers, suite) == []
    unseen = customers.copy()
    unseen.loc[0, "plan"] = "platinum"
    assert check(unseen, suite) == [("expect_column_values_to_be_in_set", "plan", 1)]
    gaps = customers.copy()
    gaps.loc[gaps.index[: len(gaps) // 2], ["monthly_charges", "plan"]] = np.nan
    assert check(gaps, suite) == [
        ("expect_column_values_to_not_be_null", "monthly_charges", 150),
        ("expect_column_values_to_not_be_null", "plan", gaps["plan"].isna().sum()),
    ]


def bring_customers(project: Path, customers: pd.DataFrame) -> Path:
    """The customers written into the scratch project and params.yaml pointed at them, edited as a
    person would (its comments kept)."""
    data.write_table(customers, str(project / SOURCE))
    params = project / "params.yaml"
    text = re.sub(r"(?m)^  source: .*$", f"  source: {SOURCE}", params.read_text(), count=1)
    text = re.sub(r"(?m)^  target: .*$", "  target: churned", text, count=1)
    # The features are in the file: no feature store section (a bake with Feast has one).
    text = re.sub(r"(?m)^feature_store:\n(?:[ #].*\n?)*", "", text)
    # A comment of the user's own (params.yaml may have none: the act tests rewrite it with yaml).
    params.write_text(f"# Churn of our customers.\n{text}")
    return params


def run(*args: str) -> int:
    return cli.main(["--params", "params.yaml", "suggest-suite", *args])


def test_suggest_suite_writes_the_datas_own_suite_and_use_edits_one_line(
    project, customers, capsys
):
    params = bring_customers(project, customers)
    before = params.read_text()
    bundled = {path.name: path.read_text() for path in (project / "validation").iterdir()}
    assert run() == cli.EXIT_OK
    said = capsys.readouterr().out
    assert "set validation.suite: validation/customers.json in params.yaml (or --use)" in said
    assert "consider adding 'customer_id' to data.drop in params.yaml" in said
    assert "categorical columns: support_calls, contract, churned, plan, paperless, country" in said
    assert params.read_text() == before
    written = json.loads((project / "validation" / "customers.json").read_text())
    assert written["name"] == "customers"
    assert {path.name: path.read_text() for path in project.glob("validation/[!c]*")} == bundled

    assert run("--use") == cli.EXIT_OK  # its own suite is replaced without --force
    after = params.read_text().splitlines()
    changed = [pair for pair in zip(before.splitlines(), after, strict=True) if pair[0] != pair[1]]
    assert [new for _, new in changed] == ["  suite: validation/customers.json"]
    assert after[0] == "# Churn of our customers."  # the comments survive
    assert cli.main(["--params", "params.yaml", "validate"]) == cli.EXIT_OK


def test_another_datas_suite_is_kept_unless_forced(project, customers, capsys):
    bring_customers(project, customers)
    other = project / "validation" / "customers.json"
    other.write_text(json.dumps({"name": "x", "meta": {"data_source": "old/customers.csv"}}))
    assert run() == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert (
        f"{other} holds the suite of old/customers.csv (meta.data_source), not of {SOURCE}" in error
    )
    assert "--force" in error
    assert json.loads(other.read_text())["name"] == "x"
    assert run("--force") == cli.EXIT_OK
    assert json.loads(other.read_text())["meta"]["data_source"] == SOURCE


def test_a_params_file_without_the_suite_line_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  source: x.csv\nvalidation: {suite: old.json}\n")
    with pytest.raises(SettingsError, match=re.escape(f"{params}: found no line `suite: ...`")):
        suggest.point_validation_suite(params, "validation/x.json")
    params.write_text("validation:\n  # reviewed\n  suite: old.json  # ours\nmodel: {}\n")
    suggest.point_validation_suite(params, "validation/x.json")
    assert params.read_text() == (
        "validation:\n  # reviewed\n  suite: validation/x.json  # ours\nmodel: {}\n"
    )
    # A file name YAML would cut short (at " #") is quoted.
    suggest.point_validation_suite(params, "validation/loans #2.json")
    assert '  suite: "validation/loans #2.json"  # ours\n' in params.read_text()
