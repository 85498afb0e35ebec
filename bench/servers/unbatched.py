"""The unbatched baseline: FastAPI + orjson + the SavedModel signature in the thread pool.

Why: this is what a careful engineer writes without a batcher. It speaks TF Serving's row format
(`POST /v1/models/mnist:predict` with `{"instances": [...]}`) so that the benchmark can send the
service and this baseline the very same body. Every request is one TensorFlow call; at high
concurrency the calls fight for the cores (the p99 this baseline shows is the reason for batching).

Run: .venv/bin/python -m bench.servers.unbatched --model-dir models/mnist/1 --port 8500
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from bench.servers.baseline_cli import serve_baseline
from bench.servers.savedmodel import load_signature


def create_app(model_dir: str) -> FastAPI:
    """One predict route and a readiness route; the model is loaded before uvicorn starts."""
    predict_rows = load_signature(model_dir)
    app = FastAPI()

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/mnist:predict")
    async def predict(request: Request) -> Response:
        instances = orjson.loads(await request.body())["instances"]
        image = np.asarray(instances, dtype=np.float32)
        outputs = await run_in_threadpool(predict_rows, image)
        predictions = [
            {"probabilities": probabilities, "class_id": int(class_id)}
            for probabilities, class_id in zip(
                outputs["probabilities"].tolist(), outputs["class_id"].tolist(), strict=True
            )
        ]
        return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")

    return app


def main() -> None:
    serve_baseline(create_app, "unbatched FastAPI baseline")


if __name__ == "__main__":
    main()
