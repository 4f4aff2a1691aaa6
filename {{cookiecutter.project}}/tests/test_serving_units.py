"""The serving parts on their own, without a bento: the micro-batcher, the Arrow body, the request
schemas, the model's metadata, the token configuration, and all of them for a model with
categorical features and nulls. test_service checks them in a server."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from {{ cookiecutter.package }}.deploy import payloads
from {{ cookiecutter.package }}.errors import BadRows
from {{ cookiecutter.package }}.profile import ProfileCheck, hard_bounds, outside_problem
from {{ cookiecutter.package }}.serving import column_names, openapi, row_values, schemas
from {{ cookiecutter.package }}.serving.arrow import ArrowRows
from {{ cookiecutter.package }}.serving.batcher import MicroBatcher, Scores, warnings_ignored
from {{ cookiecutter.package }}.serving.guard import configured_tokens, trusted_proxies
from {{ cookiecutter.package }}.serving.model_meta import read_model_meta

FEATURES = ["age", "blood pressure", "dose"]
PROFILE = {
    "age": {"min": 20.0, "max": 80.0, "categories": None},
    "blood pressure": {"min": 90.0, "max": 180.0, "categories": None},
    "dose": {"min": 0.0, "max": 2.0, "categories": [0.0, 1.0, 2.0]},
}
MAX_ROWS = 3
MAX_BYTES = 1_000  # of text in an Arrow body, once decoded
TOKEN = "a-token-of-thirty-two-characters-or-more"


# --- the micro-batcher ---------------------------------------------------------------------


class SlowModel:
    """A model call that waits for `release`, recording each batch it is given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, features: np.ndarray) -> Scores:
        self.batches.append(features[:, 0].tolist())
        await self.release.wait()
        if self.fail:
            raise ZeroDivisionError("the model failed")
        return Scores([value * 10 for value in features[:, 0]], [0.5] * len(features), 7)


async def within_seconds(awaitable, seconds: float = 5.0):
    """`awaitable`'s result; a batcher that lost a row fails the test instead of hanging it."""
    return await asyncio.wait_for(awaitable, seconds)


async def _started(*coroutines) -> list[asyncio.Task]:
    """Tasks for the coroutines, each given the chance to queue its row in order."""
    tasks = []
    for coroutine in coroutines:
        tasks.append(asyncio.ensure_future(coroutine))
        await asyncio.sleep(0)
    return tasks


def test_rows_arriving_while_the_model_runs_go_to_the_next_call_together():
    async def scenario() -> tuple[list, list]:
        model = SlowModel()
        batcher = MicroBatcher(model, max_rows=2)
        tasks = await _started(
            *(batcher.score(np.array([value])) for value in (1.0, 2.0, 3.0, 4.0))
        )
        model.release.set()
        return await within_seconds(asyncio.gather(*tasks)), model.batches

    answers, batches = asyncio.run(scenario())
    assert batches == [[1.0], [2.0, 3.0], [4.0]]  # the first alone, then at most max_rows a call
    assert answers == [(10.0, 0.5, 7), (20.0, 0.5, 7), (30.0, 0.5, 7), (40.0, 0.5, 7)]


def test_a_failing_model_call_fails_every_row_waiting_for_it_and_the_next_rows_still_score():
    async def scenario() -> tuple[list, tuple]:
        model = SlowModel(fail=True)
        batcher = MicroBatcher(model, max_rows=8)
        tasks = await _started(batcher.score(np.array([1.0])), batcher.score(np.array([2.0])))
        model.release.set()
        failed = await within_seconds(asyncio.gather(*tasks, return_exceptions=True))
        model.fail = False
        return failed, await within_seconds(batcher.score(np.array([3.0])))

    failed, later = asyncio.run(scenario())
    assert [type(error) for error in failed] == [ZeroDivisionError, ZeroDivisionError]
    assert later == (30.0, 0.5, 7)


def test_a_cancelled_waiter_does_not_break_the_others():
    async def scenario() -> tuple[list, list]:
        model = SlowModel()
        batcher = MicroBatcher(model, max_rows=8)
        first, gone, last = await _started(
            *(batcher.score(np.array([value])) for value in (1.0, 2.0, 3.0))
        )
        gone.cancel()
        model.release.set()
        return await within_seconds(asyncio.gather(first, last)), model.batches

    answers, batches = asyncio.run(scenario())
    assert answers == [(10.0, 0.5, 7), (30.0, 0.5, 7)]
    assert batches == [[1.0], [2.0, 3.0]]


def test_the_model_runs_under_one_ignore_filter_and_the_process_filters_come_back():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warnings_ignored():
            warnings.warn("X does not have valid feature names", UserWarning, stacklevel=1)
        with pytest.raises(UserWarning):
            warnings.warn("raised again", UserWarning, stacklevel=1)


# --- the Arrow body ---------------------------------------------------------------------------


def arrow_body(columns: dict[str, list] | pa.Table, compression: str | None = None) -> bytes:
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_refusal(body: bytes) -> BadRows:
    with pytest.raises(BadRows) as refused:
        ArrowRows(FEATURES, PROFILE, MAX_ROWS, MAX_BYTES)(body)
    return refused.value


def test_arrow_columns_in_any_order_and_integer_types_come_back_in_training_order():
    body = arrow_body({"dose": [1, 2], "age": [30.0, 40.0], "blood pressure": [120, 130]})
    rows = ArrowRows(FEATURES, PROFILE, MAX_ROWS, MAX_BYTES)(body)
    assert rows.dtype == np.float64
    assert rows.tolist() == [[30.0, 120.0, 1.0], [40.0, 130.0, 2.0]]


def test_arrow_column_names_must_be_the_training_features_each_once():
    missing = arrow_body({"age": [30.0], "dose": [1.0]})
    assert str(arrow_refusal(missing)) == "columns: missing 'blood pressure'"
    unknown = arrow_body({"age": [30.0], "blood pressure": [120.0], "dose": [1.0], "x": [0.0]})
    assert str(arrow_refusal(unknown)) == "columns: unknown 'x'"
    table = pa.Table.from_arrays([pa.array([30.0])] * 4, ["age", "age", "blood pressure", "dose"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert str(arrow_refusal(sink.getvalue().to_pybytes())) == "columns: repeated 'age'"


def test_arrow_columns_must_be_numbers_and_the_body_a_stream():
    body = arrow_body({"age": [30.0], "blood pressure": [120.0], "dose": ["one"]})
    assert str(arrow_refusal(body)) == (
        "columns of the wrong type (numbers for numeric features, strings for categorical ones): "
        "dose (string)"
    )
    assert str(arrow_refusal(b"not arrow")).startswith("the body is not an Arrow IPC stream")


def test_arrow_bodies_hold_one_to_max_rows_rows_counted_over_every_batch():
    assert str(arrow_refusal(arrow_body({name: [] for name in FEATURES}))) == (
        f"no rows; send 1 to {MAX_ROWS}"
    )
    over = f"over {MAX_ROWS} rows; send 1 to {MAX_ROWS}"
    assert (
        str(arrow_refusal(arrow_body({name: [1.0] * (MAX_ROWS + 1) for name in FEATURES}))) == over
    )
    two_batches = pa.concat_tables([pa.table({name: [1.0, 2.0] for name in FEATURES})] * 2)
    assert str(arrow_refusal(arrow_body(two_batches))) == over
    # Columns of nulls take no bytes at all: only the header's row count stops a billion of them.
    nulls = pa.table({name: pa.nulls(10**9) for name in FEATURES})
    assert str(arrow_refusal(arrow_body(nulls))) == over


def test_compressed_arrow_batches_are_refused_from_their_header_before_inflating():
    for codec in ("zstd", "lz4"):
        body = arrow_body({name: [1.0] for name in FEATURES}, compression=codec)
        assert str(arrow_refusal(body)) == (
            "compressed Arrow batches are refused: send the stream uncompressed"
        )
    colours = pa.array(["red"]).dictionary_encode()
    mixed = {"size": [1.0], "colour": colours, "weight": [1.0]}
    with pytest.raises(BadRows, match="compressed"):  # the dictionary batch is compressed too
        ArrowRows(MIXED, MIXED_PROFILE, MAX_ROWS, MAX_BYTES)(arrow_body(mixed, compression="zstd"))


def test_a_wide_arrow_schema_is_refused_quickly_and_its_names_echoed_in_part():
    wide = pa.schema([(f"column {index} " + "x" * 100, pa.float64()) for index in range(20_000)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, wide):
        pass
    started = time.perf_counter()
    message = str(arrow_refusal(sink.getvalue().to_pybytes()))
    assert time.perf_counter() - started < 0.5  # quadratic, it took seconds
    assert message.startswith(
        "columns: missing 'age', 'blood pressure', 'dose'; unknown 'column 0 x"
    )
    assert message.endswith(f"...' and {20_000 - column_names.NAMES_LISTED} more")
    assert len(message) < 1_000


def test_dictionary_text_is_counted_on_every_row_that_points_to_it():
    reader = ArrowRows(MIXED, MIXED_PROFILE, MAX_ROWS, MAX_BYTES)
    long_value = pa.DictionaryArray.from_arrays([0, 0, 0], ["r" * (MAX_BYTES // 2)])
    body = arrow_body({"colour": long_value, "size": [1.0] * 3, "weight": [1.0] * 3})
    with pytest.raises(BadRows, match=f"over {MAX_BYTES} bytes once decoded"):
        reader(body)


def test_arrow_values_not_finite_or_beyond_the_hard_bounds_are_named_by_row_and_feature():
    highest_age = hard_bounds(PROFILE["age"])[1]
    body = arrow_body(
        {
            "age": [30.0, highest_age + 1, 30.0],
            "blood pressure": [120.0, 120.0, float("inf")],
            "dose": [float("nan"), 1.0, None],
        }
    )
    refused = arrow_refusal(body)
    assert str(refused) == "4 values refused, in age, blood pressure, dose"
    assert [(detail["row"], detail["field"]) for detail in refused.details] == [
        (0, "dose"),
        (1, "age"),
        (2, "blood pressure"),
        (2, "dose"),
    ]
    assert refused.details[1]["problem"].startswith(f"{highest_age + 1:g} is not a finite number")
    within = {name: [hard_bounds(PROFILE[name])[1]] for name in FEATURES}
    assert ArrowRows(FEATURES, PROFILE, MAX_ROWS, MAX_BYTES)(arrow_body(within)).shape == (1, 3)


# --- the request schemas ------------------------------------------------------------------------


def test_column_problem_names_every_missing_unknown_and_repeated_column():
    assert column_names.column_problem(FEATURES, ["dose", "age", "blood pressure"]) is None
    assert column_names.column_problem(FEATURES, ["age", "age", "x", "dose"]) == (
        "missing 'blood pressure'; unknown 'x'; repeated 'age'"
    )


def test_a_row_is_keyed_by_column_name_strict_and_within_the_hard_bounds():
    Row = schemas.row_model(FEATURES, PROFILE, "model v1", {"age": 30.0})
    good = {"age": 30, "blood pressure": 120.5, "dose": 1.0}
    assert schemas.rows_reader(FEATURES, PROFILE)([Row.model_validate(good)]).tolist() == [
        [30.0, 120.5, 1.0]
    ]
    assert Row.model_json_schema()["example"] == {"age": 30.0}
    lowest, highest = hard_bounds(PROFILE["blood pressure"])
    for bad in (
        {**good, "extra": 1.0},
        {"age": 30.0, "dose": 1.0},
        {**good, "age": "30"},
        {**good, "dose": True},
        {**good, "age": float("nan")},
        {**good, "blood pressure": highest + 1},
        {**good, "blood pressure": lowest - 1},
    ):
        with pytest.raises(ValidationError):
            Row.model_validate(bad)


def test_predict_s_body_reader_names_the_field_and_never_echoes_the_value():
    Row = schemas.row_model(FEATURES, PROFILE, "model v1", None)
    read_row = schemas.row_body_reader(Row, schemas.rows_reader(FEATURES, PROFILE))
    good = {"age": 30, "blood pressure": 120.5, "dose": 1.0}
    assert read_row(json.dumps(good).encode()).tolist() == [[30.0, 120.5, 1.0]]
    with pytest.raises(BadRows) as refused:
        read_row(json.dumps({**good, "age": "thirty-one", "extra": 1}).encode())
    assert str(refused.value).startswith("age: ") and str(refused.value).endswith("(and 1 more)")
    assert [detail["field"] for detail in refused.value.details] == ["age", "extra"]
    assert "thirty-one" not in json.dumps(refused.value.details)
    with pytest.raises(BadRows, match=r"^body: Invalid JSON"):
        read_row(b'{"age": 30,')


def columns_body(columns: list[str], data: list[list], **extra) -> str:
    return json.dumps({"columns": columns, "data": data, **extra})


def test_a_table_in_any_column_order_comes_back_in_training_order():
    Columns = schemas.columns_model(FEATURES, PROFILE, MAX_ROWS, None)
    body = columns_body(
        ["dose", "age", "blood pressure"], [[1, 30, 120], [2, 40, 130]], index=[7, 8]
    )
    table = Columns.model_validate_json(body)
    assert table.features.tolist() == [[30.0, 120.0, 1.0], [40.0, 130.0, 2.0]]


def test_a_table_error_names_the_feature_not_its_position():
    Columns = schemas.columns_model(FEATURES, PROFILE, MAX_ROWS, None)
    body = columns_body(["dose", "age", "blood pressure"], [[1, 30, 120], [2, "x", 130]])
    with pytest.raises(ValidationError) as refused:
        Columns.model_validate_json(body)
    assert [error["loc"] for error in refused.value.errors()] == [("data", 1, "age")]


def test_a_table_is_refused_for_bad_columns_extra_keys_too_many_rows_or_far_values():
    Columns = schemas.columns_model(FEATURES, PROFILE, MAX_ROWS, None)
    lowest, highest = schemas.table_bounds(FEATURES, PROFILE)
    assert (lowest, highest) == (hard_bounds(PROFILE["blood pressure"])[0], 1080.0)
    row = [30, 120, 1]
    with pytest.raises(ValidationError, match="missing 'dose'; unknown 'x'"):
        Columns.model_validate_json(columns_body(["age", "blood pressure", "x"], [row]))
    for body in (
        columns_body(FEATURES, [row], extra=1),
        columns_body(FEATURES, [row] * (MAX_ROWS + 1)),
        columns_body(FEATURES, []),
        columns_body(FEATURES, [[30, 120]]),
        columns_body(FEATURES, [[30, highest + 1, 1]]),
    ):
        with pytest.raises(ValidationError):
            Columns.model_validate_json(body)
    assert Columns.model_validate_json(columns_body(FEATURES, [[30, highest, 1]]))


def test_a_table_nested_too_deep_is_a_validation_error_not_a_recursion_error():
    Columns = schemas.columns_model(FEATURES, PROFILE, MAX_ROWS, None)
    deep = "[" * 50_000 + "]" * 50_000
    for body in (deep, '{"columns": ' + deep + ', "data": [[30, 120, 1]]}'):
        with pytest.raises(ValidationError):
            Columns.model_validate_json(body)
    with pytest.raises(ValidationError, match="index"):
        Columns.model_validate_json(columns_body(FEATURES, [[30, 120, 1]], index=[0] * 4))


def test_a_batch_is_refused_for_an_unknown_key_as_a_row_is():
    Row = schemas.row_model(FEATURES, PROFILE, "model v1", None)
    Rows = schemas.batch_model(Row, MAX_ROWS)
    good = {"age": 30, "blood pressure": 120.5, "dose": 1.0}
    assert len(Rows.model_validate({"rows": [good]}).rows) == 1
    for bad in ({"rows": [good], "row": [good]}, {"rows": []}, {"rows": [good] * (MAX_ROWS + 1)}):
        with pytest.raises(ValidationError):
            Rows.model_validate(bad)


def test_trusted_proxies_are_none_unless_listed_and_each_must_be_an_address_or_network():
    assert trusted_proxies({}) == ("", None)
    assert trusted_proxies({"FORWARDED_ALLOW_IPS": " 10.0.0.0/8, 127.0.0.1 ,::1"}) == (
        "10.0.0.0/8,127.0.0.1/32,::1/128",
        None,
    )
    proxies, problem = trusted_proxies({"FORWARDED_ALLOW_IPS": "127.0.0.1,*"})
    assert proxies == "" and problem.startswith("FORWARDED_ALLOW_IPS: '*' does not appear")


# --- the model's metadata and the tokens ----------------------------------------------------------


def write_model(folder: Path, inputs: list[dict], metadata: dict) -> Path:
    folder.mkdir(exist_ok=True)
    mlmodel = {"signature": {"inputs": json.dumps(inputs)}, "metadata": metadata}
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder


def test_model_meta_reads_the_signature_the_profile_and_the_buckets(tmp_path: Path):
    inputs = [{"name": name, "type": "double"} for name in FEATURES]
    model = write_model(tmp_path, inputs, {"feature_profile": PROFILE, "prediction_buckets": [1.5]})
    (model / "input_example.json").write_text(
        json.dumps({"columns": FEATURES, "data": [[1, 2, 3]]})
    )
    meta = read_model_meta(model)
    assert (meta.features, meta.profile) == (FEATURES, PROFILE)
    assert meta.prediction_buckets == (1.5,)
    assert meta.example == {"age": 1, "blood pressure": 2, "dose": 3}


def test_model_meta_refuses_models_that_cannot_serve(tmp_path: Path):
    numbers = [{"name": name, "type": "long"} for name in FEATURES]
    with pytest.raises(RuntimeError, match="no training profile for features \\['dose'\\]"):
        read_model_meta(
            write_model(tmp_path, numbers, {"feature_profile": {"age": {}, "blood pressure": {}}})
        )
    text = [*numbers[:2], {"name": "dose", "type": "string"}]
    with pytest.raises(RuntimeError, match="'dose' is string in the signature, but its profile"):
        read_model_meta(write_model(tmp_path, text, {"feature_profile": PROFILE}))
    with pytest.raises(RuntimeError, match="no column-based input signature"):
        read_model_meta(write_model(tmp_path, [], {"feature_profile": PROFILE}))


def test_tokens_are_required_only_with_auth_and_their_problem_is_kept_for_the_start():
    assert configured_tokens(False, {"SERVICE_API_TOKENS": "short"}) == (None, None)
    assert configured_tokens(True, {"SERVICE_API_TOKENS": TOKEN}) == ([TOKEN], None)
    tokens, problem = configured_tokens(True, {})
    assert tokens == [] and "neither SERVICE_API_TOKENS nor SERVICE_API_TOKENS_FILE" in problem
    tokens, problem = configured_tokens(True, {"SERVICE_API_TOKENS": "short"})
    assert tokens == [] and "shorter than 32 characters" in problem


# --- models with categorical features and nulls -------------------------------------------------

MIXED = ["colour", "size", "weight"]
MIXED_PROFILE = {
    "colour": {
        "kind": "categorical",
        "nullable": True,
        "missing_rate": 0.1,
        "categories": ["blue", "red"],
        "shares": {"blue": 0.5, "red": 0.5},
    },
    "size": {"kind": "numeric", "nullable": True, "min": 1.0, "max": 9.0, "categories": None},
    "weight": {"kind": "numeric", "nullable": False, "min": 0.0, "max": 5.0, "categories": None},
}


def refused_fields(model, body: dict | str) -> list[tuple]:
    """The locations pydantic names in refusing `body`."""
    with pytest.raises(ValidationError) as refused:
        if isinstance(body, str):
            model.model_validate_json(body)
        else:
            model.model_validate(body)
    return [error["loc"] for error in refused.value.errors()]


def test_a_mixed_row_takes_text_for_a_category_and_null_where_the_model_takes_it():
    Row = schemas.row_model(MIXED, MIXED_PROFILE, "model v1", None)
    read = schemas.rows_reader(MIXED, MIXED_PROFILE)
    rows = read([Row.model_validate({"colour": "green", "size": None, "weight": 2})])
    assert rows.dtype == object and rows.tolist() == [["green", None, 2.0]]
    assert read([Row.model_validate({"colour": None, "size": 3, "weight": 0})]).tolist() == [
        [None, 3.0, 0.0]
    ]
    good = {"colour": "red", "size": 3.0, "weight": 2.0}
    assert refused_fields(Row, {**good, "colour": 3}) == [("colour",)]
    assert refused_fields(Row, {**good, "colour": True}) == [("colour",)]
    assert refused_fields(Row, {**good, "size": "3"}) == [("size",)]
    assert refused_fields(Row, {**good, "weight": None}) == [("weight",)]
    assert refused_fields(Row, {"size": 3.0, "weight": 2.0}) == [("colour",)]
    # numeric-only models keep their float rows, a null as NaN
    numbers = {name: MIXED_PROFILE[name] for name in MIXED[1:]}
    NumberRow = schemas.row_model(MIXED[1:], numbers, "model v1", None)
    row = NumberRow.model_validate({"size": None, "weight": 2})
    floats = schemas.rows_reader(MIXED[1:], numbers)([row])
    assert floats.dtype == np.float64 and np.isnan(floats[0, 0]) and floats[0, 1] == 2.0


def test_a_mixed_table_names_each_value_its_feature_does_not_take():
    Columns = schemas.columns_model(MIXED, MIXED_PROFILE, MAX_ROWS, None)
    table = Columns.model_validate_json(
        columns_body(["weight", "colour", "size"], [[1, "red", None], [2.5, None, 4]])
    )
    assert table.features.tolist() == [["red", None, 1.0], [None, 4.0, 2.5]]
    body = columns_body(MIXED, [["red", 2, 1], [3, "x", None]])
    assert refused_fields(Columns, body) == [
        ("data", 1, "colour"),
        ("data", 1, "size"),
        ("data", 1, "weight"),
    ]
    with pytest.raises(ValidationError, match="weight: should be a finite number, not null"):
        Columns.model_validate_json(columns_body(MIXED, [["red", 2, None]]))


def test_an_infinite_number_is_misplaced_wherever_a_row_comes_from():
    """The model skips its own finiteness scan: rows that do not come through the request models
    (an online store's, for one) are checked here."""
    text, nullable = row_values.value_kinds(MIXED, MIXED_PROFILE)
    mixed = np.array([["red", float("inf"), 1.0], ["red", 2.0, -float("inf")]], dtype=object)
    misplaced = row_values.misplaced_values(mixed, MIXED, text, nullable)
    assert [(row, name) for row, name, _ in misplaced] == [(0, "size"), (1, "weight")]
    numbers = {name: MIXED_PROFILE[name] for name in MIXED[1:]}
    floats = np.array([[np.inf, 1.0], [np.nan, 2.0]])
    text, nullable = row_values.value_kinds(MIXED[1:], numbers)
    (problem,) = row_values.misplaced_values(floats, MIXED[1:], text, nullable)
    assert problem[:2] == (0, "size") and "should be a finite number or null, not inf" in problem[2]


def test_arrow_takes_string_and_dictionary_columns_for_categories_and_nulls_where_nullable():
    reader = ArrowRows(MIXED, MIXED_PROFILE, MAX_ROWS, MAX_BYTES)
    colours = pa.array(["red", None, "green"]).dictionary_encode()
    body = arrow_body({"size": [1.0, None, 2.0], "colour": colours, "weight": [1, 2, 3]})
    rows = reader(body)
    assert rows.dtype == object
    assert rows[:, 0].tolist() == ["red", None, "green"] and rows[:, 2].tolist() == [1, 2, 3]
    assert np.isnan(rows[1, 1])
    large = arrow_body(
        {"colour": pa.array(["red"], pa.large_string()), "size": [2.0], "weight": [1]}
    )
    assert reader(large).tolist() == [["red", 2.0, 1.0]]
    with pytest.raises(BadRows, match=r"wrong type.*colour \(int64\), size \(string\)"):
        reader(arrow_body({"colour": [1], "size": ["2"], "weight": [1.0]}))
    with pytest.raises(BadRows, match="values refused, in weight") as refused:
        reader(arrow_body({"colour": ["red"], "size": [2.0], "weight": [None]}))
    assert refused.value.details[0]["problem"] == "null, which the model does not take"


def test_an_unseen_category_is_outside_the_profile_and_a_null_never_is():
    check = ProfileCheck(MIXED, MIXED_PROFILE)
    rows = np.array(
        [["red", 2.0, 1.0], ["green", None, 1.0], [None, 10.0, np.nan], [np.nan, 3.0, 6.0]],
        dtype=object,
    )
    assert check.outside(rows) == {1: ["colour"], 2: ["size"], 3: ["weight"]}
    assert outside_problem("green", MIXED_PROFILE["colour"]) == (
        "'green' is not a category training saw (blue, red)"
    )
    numbers = ProfileCheck(FEATURES, PROFILE)  # numeric models: float rows, NaN never outside
    assert numbers.outside(np.array([[np.nan, 100.0, np.nan], [30.0, 100.0, 1.5]])) == {1: ["dose"]}


def test_a_categorical_model_is_called_with_a_frame_of_the_training_columns(tmp_path: Path):
    inputs = [
        {"name": "colour", "type": "string"},
        {"name": "size", "type": "double"},
        {"name": "weight", "type": "long"},
    ]
    meta = read_model_meta(write_model(tmp_path, inputs, {"feature_profile": MIXED_PROFILE}))
    assert meta.categorical == ["colour"]
    frame = meta.model_input(np.array([["red", None, 1.0], [None, 2.0, 3.0]], dtype=object))
    assert list(frame.columns) == MIXED
    assert frame["size"].dtype == frame["weight"].dtype == np.float64
    assert frame["colour"].iloc[0] == "red" and frame.isna().to_numpy().tolist() == [
        [False, True, False],
        [True, False, False],
    ]
    floats = np.array([[1.0, 2.0, 3.0]])
    numeric = read_model_meta(
        write_model(
            tmp_path,
            [{"name": n, "type": "double"} for n in FEATURES],
            {"feature_profile": PROFILE},
        )
    )
    assert numeric.model_input(floats) is floats


def test_the_openapi_document_says_which_features_are_text_and_which_take_null():
    Row = schemas.row_model(MIXED, MIXED_PROFILE, "model v1", None)
    spec = openapi.document(
        {"components": {"schemas": {"Row": Row.model_json_schema()}}}, [], False
    )
    properties = spec["components"]["schemas"]["Row"]["properties"]
    assert properties["colour"]["type"] == "string" and properties["colour"]["nullable"] is True
    assert "'blue', 'red'" in properties["colour"]["description"]
    assert properties["size"]["type"] == "number" and properties["size"]["nullable"] is True
    assert properties["weight"]["type"] == "number" and "nullable" not in properties["weight"]
    assert "anyOf" not in json.dumps(properties)


def test_a_classifier_answers_every_class_probability_keyed_by_its_label():
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    fields = schemas.probability_fields(probabilities, ["setosa", "versicolor", "True"])
    assert fields["probabilities"] == [0.7, 0.5]
    assert fields["class_probabilities"][0] == {"setosa": 0.2, "versicolor": 0.7, "True": 0.1}
    assert schemas.probability_fields(None, []) == {}
    answer = schemas.BatchPrediction(predictions=[True, "x", 1], model_version=1, **fields)
    assert json.loads(answer.model_dump_json())["predictions"] == [True, "x", 1]


def test_sample_rows_are_sent_with_their_text_and_their_gaps():
    rows = pd.DataFrame({"colour": ["red", None], "size": [np.nan, 2], "flag": [True, False]})
    assert payloads.as_records(rows) == [
        {"colour": "red", "size": None, "flag": 1.0},
        {"colour": None, "size": 2.0, "flag": 0.0},
    ]
    assert payloads.as_table(rows)["data"] == [["red", None, 1.0], [None, 2.0, 0.0]]
    table = pa.ipc.open_stream(payloads.as_arrow(rows)).read_all()
    assert table.column("colour").to_pylist() == ["red", None]
    assert table.column("size").null_count == 1
