"""The in-process limit: the SavedModel signature called directly, no HTTP, no batcher.

Why: the service's 64-row throughput is judged against what TensorFlow itself does with the same
batch in the same process (target: >= 0.7x). Run in its own process by bench/run.py so that the
orchestrator never imports TensorFlow; prints one JSON object.

Run: .venv/bin/python -m bench.inprocess --model-dir models/mnist/1 --batch-sizes 1,64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.payloads import model_input
from bench.servers.savedmodel import load_signature


def measure(
    model_dir: str, model: str, batch_sizes: list[int], seconds: float, ocr_width: int
) -> list[dict[str, float]]:
    """Per batch size: median call time and rows per second over `seconds` of back-to-back calls."""
    predict_rows = load_signature(model_dir)
    results = []
    for batch_size in batch_sizes:
        image = model_input(model, batch_size, ocr_width)
        for _ in range(5):
            predict_rows(image)
        durations = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            call_started = time.perf_counter()
            predict_rows(image)
            durations.append(time.perf_counter() - call_started)
        elapsed = time.perf_counter() - started
        results.append(
            {
                "batch_size": batch_size,
                "calls": len(durations),
                "median_ms": round(statistics.median(durations) * 1000, 3),
                "calls_per_s": round(len(durations) / elapsed, 1),
                "rows_per_s": round(len(durations) * batch_size / elapsed, 1),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="SavedModel signature called in-process")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model", default="mnist", choices=["mnist", "ocr"])
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ocr-width", type=int, default=140)
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(
        json.dumps(
            {
                "model": args.model,
                "model_dir": args.model_dir,
                "results": measure(args.model_dir, args.model, sizes, args.seconds, args.ocr_width),
            }
        )
    )


if __name__ == "__main__":
    main()
