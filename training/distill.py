"""`--teacher`: train a model towards the averaged predictions of published versions.

Why (mnist, measured on the goal figure of `training.evaluate`): two versions trained
independently read 0.9948 and 0.9942 each and 0.99625 with their probabilities averaged, but
serving both doubles the per-request compute (7.4 ms for 32 rows on this 2-core machine against
3.7). Knowledge distillation (Hinton et al., 2015) trains one network of the served size towards
the teachers' softened probabilities instead, so the averaged teachers' knowledge is paid for
once, at training time.

A teacher must be a published version of the same model trained around the same held-out rows
(the rule of `--init-from`, `warm_start.check_split`): a teacher that trained on held-out digits
would pass them on, and the student's held-out figures would flatter it.

The targets travel as one tensor per row, `[one-hot label | averaged teacher probabilities]`, so
the Keras fit loop, the distribution strategies and `--init-from` work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training import publish, warm_start
from training.recipe import MnistSplit

# Share of the loss that follows the teachers; the rest follows the label. Both are the usual
# choices of the literature (Keras' own distillation example weighs the label 0.1), set once
# before any run and not tuned on the held-out figures.
TEACHER_WEIGHT = 0.9
# Softening of both distributions before they are compared (the gradient is scaled back by
# T squared, as in the paper): at T = 1 a confident teacher says little more than the label.
TEMPERATURE = 4.0
_EPSILON = 1e-7


def resolve(paths: Sequence[str], name: str, split: MnistSplit) -> tuple[str, ...]:
    """The teachers' version folders, each checked before any training starts."""
    checked = []
    for given in paths:
        path = publish.require_version_dir(Path(given))
        trained = publish.read_metadata(path).get("name")
        if trained != name:
            raise publish.PublishError(f"teacher {path} is a version of {trained!r}, not {name!r}")
        warm_start.check_split(warm_start.InitSource(path, False, path), split)
        checked.append(str(path))
    return tuple(checked)


def averaged_probabilities(paths: Sequence[str]) -> Callable[[Any], Any]:
    """`images -> the mean of the teachers' "probabilities"`, callable inside `tf.data`."""
    import tensorflow as tf

    teachers = [publish.load_serving_function(Path(path)) for path in paths]

    def teach(images: Any) -> Any:
        outputs = [teacher(image=images)["probabilities"] for teacher in teachers]
        return tf.add_n(outputs) / float(len(outputs))

    return teach


def targets(labels: Any, teacher_probabilities: Any, classes: int) -> Any:
    """One row per picture: the one-hot label, then what the teachers said."""
    import tensorflow as tf

    hard = tf.one_hot(labels, classes, dtype=tf.float32)
    return tf.concat([hard, tf.cast(teacher_probabilities, tf.float32)], axis=-1)


def loss(classes: int) -> Callable[[Any, Any], Any]:
    """The training loss for `targets(...)` rows and the student's probabilities."""
    from keras import ops

    def distillation_loss(target: Any, predicted: Any) -> Any:
        hard, soft = target[:, :classes], target[:, classes:]
        log_predicted = ops.log(ops.clip(predicted, _EPSILON, 1.0))
        label_term = -ops.sum(hard * log_predicted, axis=-1)
        teacher = ops.softmax(ops.log(ops.clip(soft, _EPSILON, 1.0)) / TEMPERATURE, axis=-1)
        student = ops.log_softmax(log_predicted / TEMPERATURE, axis=-1)
        teacher_term = -ops.sum(teacher * student, axis=-1) * TEMPERATURE**2
        return (1.0 - TEACHER_WEIGHT) * label_term + TEACHER_WEIGHT * teacher_term

    return distillation_loss


def label_accuracy(classes: int) -> Callable[[Any, Any], Any]:
    """Training accuracy against the label part of `targets(...)` rows."""
    from keras import ops

    def accuracy(target: Any, predicted: Any) -> Any:
        same = ops.argmax(target[:, :classes], axis=-1) == ops.argmax(predicted, axis=-1)
        return ops.cast(same, "float32")

    return accuracy
