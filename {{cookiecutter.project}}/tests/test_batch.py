"""Batch scoring in chunks: every row scored once, with version and time, CSV or Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from {{ cookiecutter.package }} import batch, data, training
from {{ cookiecutter.package }}.batch import chunked
from {{ cookiecutter.package }}.errors import DataError


@pytest.fixture
def model(settings, frame):
    features, labels = data.split_features_target(frame, settings.params.data)
    return training.build_pipeline(settings.params.task, settings.params.model).fit(
        features, labels
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_cover_every_row_once(settings, frame, model, tmp_path, suffix):
    source = tmp_path / f"input{suffix}"
    data.write_table(frame, str(source))
    destination = tmp_path / "out" / f"scored{suffix}"
    features = list(model.feature_names_in_)
    summary = chunked.score_file(model, features, 7, str(source), str(destination), chunk_rows=100)
    assert summary["rows"] == len(frame)
    assert summary["chunks"] == -(-len(frame) // 100)
    scored = data.read_table(str(destination))
    np.testing.assert_allclose(scored[batch.PREDICTION], model.predict(frame[features]))
    assert set(scored[batch.MODEL_VERSION]) == {7}
    assert pd.to_datetime(scored[batch.SCORED_AT]).notna().all()


def test_missing_feature_column_is_named_and_nothing_is_written(settings, frame, model, tmp_path):
    source = tmp_path / "input.csv"
    first_feature = model.feature_names_in_[0]
    data.write_table(frame.drop(columns=[first_feature]), str(source))
    destination = tmp_path / "scored.csv"
    with pytest.raises(DataError, match=first_feature):
        chunked.score_file(
            model, list(model.feature_names_in_), 1, str(source), str(destination), 50
        )
    assert not destination.exists()


def test_a_value_that_is_not_a_number_is_named_and_nothing_is_written(
    settings, frame, model, tmp_path, monkeypatch
):
    """The bad value sits past the first blocks pyarrow parses: chunks were scored and staged
    before it is met, and still nothing reaches the destination."""
    monkeypatch.setattr(chunked, "CSV_BLOCK_BYTES", 4096)
    feature = model.feature_names_in_[3]
    damaged = frame.astype({feature: object})
    damaged.loc[len(frame) - 5, feature] = "n/a?"
    source = tmp_path / "input.csv"
    data.write_table(damaged, str(source))
    destination = tmp_path / "scored.parquet"
    with pytest.raises(DataError, match=f"column '{feature}'.*'n/a\\?'"):
        chunked.score_file(
            model, list(model.feature_names_in_), 1, str(source), str(destination), 50
        )
    assert not destination.exists()


def test_the_command_allocates_from_jemalloc_where_pyarrow_has_it():
    """The batch command's lower peak comes from this pool (benchmarks/README.md); without jemalloc
    in the pyarrow build (Windows), the default pool stays."""
    default = pa.default_memory_pool()
    try:
        expected = pa.jemalloc_memory_pool().backend_name
    except NotImplementedError:
        expected = default.backend_name
    try:
        chunked.use_compact_memory_pool()
        assert pa.default_memory_pool().backend_name == expected
    finally:
        pa.set_memory_pool(default)
