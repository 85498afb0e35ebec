"""The CTC loss layer against hand-computed values and `tf.nn.ctc_loss`, and the CTC decoder."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.nets.ocr import BLANK_INDEX, NUM_CLASSES, CTCLoss, ctc_decode, edit_distance

B = BLANK_INDEX


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_ctc_layer_matches_hand_computed_paths() -> None:
    """Two samples, T = 3, classes 10 digits + blank; the second uses only 2 of its 3 steps.

    Sample 0, label "11": the only alignment of length 3 is 1, blank, 1.
    Sample 1, label "7", 2 valid steps: alignments 7 7 | 7 blank | blank 7.
    """
    rng = np.random.default_rng(0)
    p = softmax(rng.normal(size=(2, 3, NUM_CLASSES))).astype(np.float32)
    expected_0 = -np.log(p[0, 0, 1] * p[0, 1, B] * p[0, 2, 1])
    expected_1 = -np.log(
        p[1, 0, 7] * p[1, 1, 7] + p[1, 0, 7] * p[1, 1, B] + p[1, 0, B] * p[1, 1, 7]
    )
    y_true = np.array([[1, 1, -1], [7, -1, -1]], dtype=np.int32)  # padding after each label
    input_length = np.array([[3], [2]], dtype=np.int32)
    label_length = np.array([[2], [1]], dtype=np.int32)

    layer = CTCLoss(epsilon=0.0)
    loss = layer(
        [tf.constant(y_true), tf.constant(p), tf.constant(input_length), tf.constant(label_length)]
    ).numpy()

    assert loss.shape == (2, 1)
    np.testing.assert_allclose(loss[:, 0], [expected_0, expected_1], rtol=1e-5)
    # A different code path: sparse labels (from_dense drops the 0, leaving "7") and logits.
    reference = tf.nn.ctc_loss(
        labels=tf.sparse.from_dense(tf.constant([[1, 1], [7, 0]], dtype=tf.int32)),
        logits=tf.math.log(tf.constant(p)),
        label_length=None,
        logit_length=tf.constant([3, 2]),
        logits_time_major=False,
        blank_index=B,
    ).numpy()
    np.testing.assert_allclose(loss[:, 0], reference, rtol=1e-5)
    assert float(tf.add_n(layer.losses)) == np.float32(loss.mean())


def test_ctc_layer_config_round_trip() -> None:
    layer = CTCLoss(epsilon=1e-6, name="ctc")
    clone = CTCLoss.from_config(layer.get_config())
    assert clone.epsilon == 1e-6 and clone.name == "ctc"


def one_hot_steps(classes: list[int]) -> np.ndarray:
    probabilities = np.full((len(classes), NUM_CLASSES), 0.01, dtype=np.float32)
    probabilities[np.arange(len(classes)), classes] = 1.0 - 0.01 * (NUM_CLASSES - 1)
    return probabilities


def test_decoders_merge_repeats_and_drop_blanks() -> None:
    steps = np.stack(
        [
            one_hot_steps([3, 3, B, 3, 5, B, B, 0]),
            one_hot_steps([B] * 8),
            one_hot_steps([9, B, 9, 9, 1, 1, B, 2]),
        ]
    )
    for beam_width in (0, 4):
        text, confidence = ctc_decode(tf.constant(steps), beam_width=beam_width)
        assert [t.decode() for t in text.numpy()] == ["3350", "", "9912"]
        assert confidence.dtype == tf.float32 and confidence.shape == (3,)
        assert np.all((confidence.numpy() > 0.0) & (confidence.numpy() <= 1.0))
    _, greedy_confidence = ctc_decode(tf.constant(steps))
    best = 1.0 - 0.01 * (NUM_CLASSES - 1)
    # The probability of the decoded string: the best path's (best**8) plus every other
    # alignment of the same text; the empty reading has only the all-blank path.
    assert np.all(greedy_confidence.numpy() >= best**8 * (1 - 1e-5))
    np.testing.assert_allclose(greedy_confidence.numpy()[1], best**8, rtol=1e-5)
    assert greedy_confidence.numpy()[0] > best**8 * 1.01


def test_edit_distance() -> None:
    assert edit_distance("", "123") == 3
    assert edit_distance("1234", "1234") == 0
    assert edit_distance("1243", "1234") == 2
    assert edit_distance("124", "1234") == 1
