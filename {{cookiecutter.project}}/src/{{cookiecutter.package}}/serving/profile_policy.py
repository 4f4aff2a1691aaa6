"""serving.out_of_profile, applied to checked rows: flag them, refuse them (reject) or look away (off).

Shared by every endpoint, REST and gRPC: each counts the values it finds in the metrics, and under
the reject policy answers the same 422, naming each row, feature, value and what training saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.responses import JSONResponse

from ..profile import ProfileCheck, outside_problem
from .http_errors import error_body
from .metrics import Metrics


class ProfilePolicy:
    """One model's profile check under the policy `out_of_profile` ("reject", "flag" or "off")."""

    def __init__(
        self, features: list[str], profile: Mapping[str, Mapping[str, Any]], out_of_profile: str
    ) -> None:
        self.features, self.profile, self.policy = features, profile, out_of_profile
        self.check = ProfileCheck(features, profile)

    def judge(self, rows: np.ndarray, metrics: Metrics) -> dict[int, list[str]] | JSONResponse:
        """The rows with features that training never saw, by row, counted in `metrics`.

        Under the reject policy, a row outside the profile makes the answer a 422 instead.
        """
        outside = self.check.outside(rows) if self.policy != "off" else {}
        for names in outside.values():
            for name in names:
                metrics.out_of_profile(name)
        if self.policy == "reject" and outside:
            return self._refusal(rows, outside)
        return outside

    def _refusal(self, rows: np.ndarray, outside: dict[int, list[str]]) -> JSONResponse:
        """The 422 of the reject policy, naming each row, feature, value and what training saw."""
        details = [
            {
                "row": row,
                "field": name,
                "problem": outside_problem(
                    rows[row, self.features.index(name)], self.profile[name]
                ),
            }
            for row, names in outside.items()
            for name in names
        ]
        named = sorted({detail["field"] for detail in details})
        body = error_body(
            422, f"values outside the training profile: {', '.join(named)}", details=details
        )
        return JSONResponse(body, status_code=422)
