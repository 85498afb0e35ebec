"""Warm-up requests shipped with a version, in TensorFlow Serving's format.

A version may carry `assets.extra/tf_serving_warmup_requests`: a TFRecord file whose records are
serialized `tensorflow.serving.PredictionLog` messages, exactly what TF Serving replays before a
version takes traffic (at most 1000 records). Each `predict_log.request.inputs` map of
`TensorProto`s becomes one warm-up call; classify/regress/multi-inference logs have no meaning
for a `serving_default` predict signature and are refused.

`tensorflow-serving-api` is not a dependency: its three messages are declared here from their
field numbers (the wire format is all that matters), on top of TensorFlow's own `TensorProto`.
`build_warmup_record` writes the same format (tests, and users without TF Serving's tools).
Without the file, `app.servable` warms up with generated inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
_PACKAGE = "kerasserve.warmup"
_PREDICT_LOG_FIELD = 6  # PredictionLog.predict_log; 2-5 and 7 are the other log kinds


class WarmupFileError(ValueError):
    """The warm-up file exists but cannot be replayed; the version must not take traffic."""


def warmup_file(version_path: Path) -> Path:
    return version_path / WARMUP_DIR / WARMUP_FILE


def _message_classes() -> tuple[Any, Any]:
    """PredictionLog and PredictRequest classes, declared once in protobuf's default pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.Default()
    try:
        log_descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.PredictionLog")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="kerasserve/warmup_prediction_log.proto", package=_PACKAGE, syntax="proto3",
            dependency=[tensor_pb2.DESCRIPTOR.name])
        field = descriptor_pb2.FieldDescriptorProto
        optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
        request = proto.message_type.add(name="PredictRequest")
        entry = request.nested_type.add(name="InputsEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=optional, type=field.TYPE_STRING)
        entry.field.add(name="value", number=2, label=optional, type=field.TYPE_MESSAGE,
                        type_name=".tensorflow.TensorProto")
        request.field.add(name="inputs", number=2, label=repeated, type=field.TYPE_MESSAGE,
                          type_name=f".{_PACKAGE}.PredictRequest.InputsEntry")
        predict_log = proto.message_type.add(name="PredictLog")
        predict_log.field.add(name="request", number=1, label=optional,
                              type=field.TYPE_MESSAGE, type_name=f".{_PACKAGE}.PredictRequest")
        log = proto.message_type.add(name="PredictionLog")
        log.field.add(name="predict_log", number=_PREDICT_LOG_FIELD, label=optional,
                      type=field.TYPE_MESSAGE, type_name=f".{_PACKAGE}.PredictLog")
        pool.Add(proto)
        log_descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.PredictionLog")
    request_descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.PredictRequest")
    return (message_factory.GetMessageClass(log_descriptor),
            message_factory.GetMessageClass(request_descriptor))


def read_warmup_requests(version_path: Path) -> list[dict[str, np.ndarray]] | None:
    """The version's warm-up requests as input arrays; `None` when it ships no warm-up file."""
    path = warmup_file(version_path)
    if not path.is_file():
        return None
    import tensorflow as tf

    prediction_log_class, _ = _message_classes()
    requests: list[dict[str, np.ndarray]] = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path))):
            if index >= MAX_WARMUP_RECORDS:
                raise WarmupFileError(f"{path}: more than {MAX_WARMUP_RECORDS} records")
            log = prediction_log_class.FromString(record.numpy())
            if not log.HasField("predict_log") or not log.predict_log.request.inputs:
                raise WarmupFileError(f"{path}: record {index} is not a predict log with "
                                      "inputs (only predict warm-up requests are supported)")
            requests.append({key: tf.make_ndarray(tensor)
                             for key, tensor in log.predict_log.request.inputs.items()})
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        if isinstance(exc, WarmupFileError):
            raise
        raise WarmupFileError(f"{path}: not a TFRecord file of PredictionLog: {exc}") from exc
    if not requests:
        raise WarmupFileError(f"{path}: holds no records")
    return requests


def build_warmup_record(inputs: dict[str, np.ndarray]) -> bytes:
    """One serialized PredictionLog whose predict request carries `inputs`."""
    import tensorflow as tf

    prediction_log_class, _ = _message_classes()
    log = prediction_log_class()
    for key, value in inputs.items():
        log.predict_log.request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return log.SerializeToString()


def write_warmup_file(version_path: Path, requests: list[dict[str, np.ndarray]]) -> Path:
    """Write `requests` as the version's TF Serving warm-up file (a TFRecord)."""
    import tensorflow as tf

    path = warmup_file(version_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            writer.write(build_warmup_record(inputs))
    return path
