"""Held-out figures stored with a version, for people to look at (the service's dashboard).

Numbers in `metrics` say how good a version is; these say where it goes wrong: the `mnist`
confusion matrix, the `deskew` error by true angle, a few `ocr` strips with their readings.
Everything here is small plain JSON (lists of numbers, a few PNG pictures as base64 of a few
hundred bytes each), because it lives in `metadata.json` and the server keeps that in memory.
Recipes compute them in their optional `heldout_figures` hook, through the exported serving
function, on the same held-out data as their metrics.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

FIGURES_KEY = "figures"
HISTORY_KEY = "history"


def confusion_matrix(expected: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """`counts[true][predicted]` over the held-out rows."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(expected, np.int64), np.asarray(predicted, np.int64)), 1)
    return counts.tolist()


def error_by_bins(
    values: np.ndarray, errors: np.ndarray, edges: np.ndarray
) -> dict[str, list[float] | list[int]]:
    """Mean absolute error of the rows whose `values` fall in each `[edges[i], edges[i+1])`
    (the last bin includes its upper edge); empty bins get 0 with a count of 0."""
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(index, minlength=len(edges) - 1)
    total = np.bincount(index, weights=np.abs(errors), minlength=len(edges) - 1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return {
        "bin_edges": [float(edge) for edge in edges],
        "mean_abs_error": [round(float(value), 4) for value in mean],
        "count": [int(value) for value in count],
    }


def png_base64(image: np.ndarray) -> str:
    """A `[H, W]` image in [0, 1] (MNIST polarity) as a greyscale PNG, base64 (ASCII)."""
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)  # uint8 [H, W]: "L"
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def history_record(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """Keras' per-epoch history as JSON numbers (one list per metric, epoch order)."""
    return {key: [float(value) for value in values] for key, values in history.items()}


def recipe_figures(recipe: Any, serving_fn: Any, split: Any, config: Any) -> dict[str, Any]:
    """The recipe's `heldout_figures(serving_fn, split, config)`, or `{}` without the hook."""
    hook = getattr(recipe, "heldout_figures", None)
    return dict(hook(serving_fn, split, config)) if callable(hook) else {}
