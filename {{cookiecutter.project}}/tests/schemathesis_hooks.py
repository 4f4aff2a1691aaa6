"""Bodies of /predict_arrow's media type for the schemathesis run in test_security.

The document can only call the body binary, so schemathesis takes whatever is generated here as
valid and expects it accepted: Arrow streams of every feature in ARROW_FEATURES (a JSON object of
feature -> [lowest, highest] accepted value), in any order, 1 to 5 rows of any float within those
bounds. Bodies that must be refused are test_service's.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import schemathesis
from hypothesis import strategies as st

from {{ cookiecutter.package }}.deploy.payloads import as_arrow
from {{ cookiecutter.package }}.serving import arrow

BOUNDS: dict[str, list[float]] = json.loads(os.environ["ARROW_FEATURES"])


@st.composite
def arrow_streams(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(min_value=1, max_value=5))
    columns = {
        name: draw(st.lists(st.floats(*BOUNDS[name]), min_size=rows, max_size=rows))
        for name in draw(st.permutations(list(BOUNDS)))
    }
    return as_arrow(pd.DataFrame(columns, dtype="float64"))


schemathesis.openapi.media_type(arrow.ARROW_STREAM, arrow_streams())
