"""PyTriton peer: Triton's core with its dynamic batcher in front of the same SavedModel signature.

Why: Triton's dynamic batcher is the reference the issue's targets are set against. Runs in its
own virtual environment (bench/.venvs/pytriton: nvidia-pytriton 0.7.0, numpy<2, tensorflow-cpu),
with the repository root on PYTHONPATH and LD_LIBRARY_PATH set to the interpreter's LIBDIR (the
Python stub links the system libpython; see /work/shared/notes/performance.md).

Serves `mnist` (v2 JSON and binary) at /v2/models/mnist/infer: input `image` [N, 28, 28, 1] FP32,
outputs `probabilities` [N, 10] FP32 and `class_id` [N, 1] INT64 (Triton needs a per-row shape).
"""

from __future__ import annotations

import argparse
import signal

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.servers.savedmodel import load_signature


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """PyTriton's serve() stops only on KeyboardInterrupt: turn SIGTERM into one."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTriton peer serving the mnist SavedModel")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    args = parser.parse_args()

    # A process started in the background inherits SIGINT as ignored; restore both stop signals.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)

    predict_rows = load_signature(args.model_dir)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        outputs = predict_rows(image)
        return {
            "probabilities": outputs["probabilities"],
            "class_id": outputs["class_id"].reshape(-1, 1),
        }

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="mnist",
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.float32, shape=(28, 28, 1))],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                Tensor(name="class_id", dtype=np.int64, shape=(1,)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
