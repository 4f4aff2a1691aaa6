"""The baseline of `benchmarks/serving.py`: the article's FastAPI app, its code exactly as written.

Nothing is changed, not even its style (hence the lint and format exemptions): an async endpoint, a
pydantic body `{"features": [...]}` of bare numbers in the model's column order, the pickle read from
`model.pkl` in the working directory. The harness adapts to it: it writes the registered model there
with joblib, starts `uvicorn baseline_fastapi:app` in that folder, and sends each row as that list.
"""

# ruff: noqa: I001
# fmt: off
from fastapi import FastAPI
from pydantic import BaseModel
import joblib

app = FastAPI()
model = joblib.load('model.pkl')

class PredictionRequest(BaseModel):
    features: list[float]

@app.post("/predict")
async def predict(request: PredictionRequest):
    prediction = model.predict([request.features])
    return {"prediction": prediction.tolist()}
