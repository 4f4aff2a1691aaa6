"""The model's features as Feast knows them: who they describe, where they are kept, which ones the
model reads. `{{ cookiecutter.package }} materialize` applies these definitions and loads the online store.

Feast imports every Python file of this folder on apply: keep scripts elsewhere. The feature view's
columns are inferred from the source file, so adding a column to the data adds a feature.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, FileSource, ValueType

patient = Entity(
    name="patient",
    join_keys=["patient_id"],
    value_type=ValueType.INT64,
    description="One patient's record.",
)

measurements_source = FileSource(
    name="measurements_source",
{%- if cookiecutter.task == "classification" %}
    path="../data/features/breast_cancer.parquet",
{%- else %}
    path="../data/features/diabetes.parquet",
{%- endif %}
    timestamp_field="event_timestamp",
)

measurements = FeatureView(
    name="measurements",
    entities=[patient],
    # A label joins the newest measurement at most this old at its own time; older is no value.
    ttl=timedelta(days=365),
    source=measurements_source,
    online=True,
)

# What the model reads: training asks for it, the service fetches it, the model records its name.
model_features = FeatureService(name="model_features", features=[measurements])
