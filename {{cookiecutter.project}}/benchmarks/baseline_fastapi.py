"""The baseline of `benchmarks/serving.py`: the article's plain FastAPI app around a joblib pickle.

Kept as the article has it (no validation beyond JSON numbers, no version, no batching) so the
benchmark compares the generated service with what a team writes in ten lines. The harness writes the
pickle from the same registered model and starts this app with `uvicorn benchmarks.baseline_fastapi:app`;
MODEL_PATH names the pickle.
"""

import os

import joblib
import numpy as np
from fastapi import FastAPI

app = FastAPI()
model = joblib.load(os.environ.get("MODEL_PATH", "model.joblib"))
features = list(model.feature_names_in_)


@app.post("/predict")
def predict(row: dict[str, float]):
    values = np.array([[row[name] for name in features]])
    return {"prediction": model.predict(values).tolist()[0]}
