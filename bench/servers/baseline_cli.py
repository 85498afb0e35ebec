"""The command line shared by the two FastAPI baselines: `--model-dir D --port P`, uvicorn.

Why one helper: the naive and unbatched baselines must start the same way (same host, same log
level) so that only their request handling differs in the benchmark.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def serve_baseline(create_app: Callable[[str], FastAPI], description: str) -> None:
    """Parse `--model-dir` and `--port`, then serve `create_app(model_dir)` on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning")
