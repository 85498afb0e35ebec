"""The naive baseline: the FastAPI tutorial server (pydantic body, Keras `model.predict`).

Why: it is what most "serve a Keras model with FastAPI" tutorials show, and the issue's target is
a multiple of it. The request body is validated element by element by pydantic, and every request
pays `model.predict`'s per-call setup (about 50 ms here). The SavedModel is wrapped in a Keras
model with `TFSMLayer`, the Keras 3 way to load a SavedModel for `predict`.

Run: .venv/bin/python -m bench.servers.naive --model-dir models/mnist/1 --port 8501
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from bench.servers.baseline_cli import serve_baseline


class PredictRequest(BaseModel):
    """TF Serving's row format, typed the tutorial way: [N][28][28][1] floats."""

    instances: list[list[list[list[float]]]]


class Prediction(BaseModel):
    probabilities: list[float]
    class_id: int


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def create_app(model_dir: str) -> FastAPI:
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.TFSMLayer(model_dir, call_endpoint="serving_default"),
        ]
    )
    model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0)
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/mnist:predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        outputs = model.predict(np.array(request.instances, dtype=np.float32), verbose=0)
        return PredictResponse(
            predictions=[
                Prediction(probabilities=probabilities, class_id=class_id)
                for probabilities, class_id in zip(
                    outputs["probabilities"].tolist(), outputs["class_id"].tolist(), strict=True
                )
            ]
        )

    return app


def main() -> None:
    serve_baseline(create_app, "naive FastAPI + model.predict baseline")


if __name__ == "__main__":
    main()
