"""Warm-up requests shipped with a version, in TensorFlow Serving's format.

A version may carry `assets.extra/tf_serving_warmup_requests`: a TFRecord file whose records are
serialized `tensorflow.serving.PredictionLog` messages, exactly what TF Serving replays before a
version takes traffic (at most 1000 records). Each `predict_log.request.inputs` map of
`TensorProto`s becomes one warm-up call; classify/regress/multi-inference logs have no meaning
for a `serving_default` predict signature and are refused.

The records are read with TF Serving's own `prediction_log_pb2` (`tensorflow-serving-api`, a
dependency for the gRPC adapters); `write_warmup_file` writes them with it too (tests, and users
without TF Serving's tools). Without the file, `app.servable` warms up with generated inputs.

The read is bounded before anything is allocated (`WarmupLimits`: file size and record count,
`--warmup-max-bytes` / `--warmup-max-records`): the file size is checked first, then every
record header is walked (12 bytes each) and its declared length compared with the bytes left in
the file, because TensorFlow's reader allocates a record's declared length before reading it.
A file that is over a limit, truncated or corrupt fails the version's load with a message that
says which (TF Serving does the same): the version never serves, the previous one keeps serving.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
# Warm-up files hold a few example requests (kilobytes); 64 MiB leaves room for large batches
# of pictures and bounds what a corrupt or hostile file can make the loader read.
MAX_WARMUP_BYTES = 64 * 1024 * 1024
_RECORD_HEADER = struct.Struct("<QI")  # length, masked CRC32C of the length
_RECORD_FOOTER_BYTES = 4  # masked CRC32C of the data
_FILE_NAME = f"{WARMUP_DIR}/{WARMUP_FILE}"


class WarmupFileError(ValueError):
    """The warm-up file exists but cannot be replayed; the version must not take traffic."""


@dataclass(frozen=True)
class WarmupLimits:
    """Bounds on one version's warm-up file (settings `warmup_max_bytes`/`_records`)."""

    max_bytes: int = MAX_WARMUP_BYTES
    max_records: int = MAX_WARMUP_RECORDS


def warmup_file(version_path: Path) -> Path:
    return version_path / WARMUP_DIR / WARMUP_FILE


def read_warmup_requests(
    version_path: Path, limits: WarmupLimits | None = None
) -> list[dict[str, np.ndarray]] | None:
    """The version's warm-up requests as input arrays; `None` when it ships no warm-up file."""
    limits = limits or WarmupLimits()
    path = warmup_file(version_path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WarmupFileError(f"{_FILE_NAME} cannot be read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        raise WarmupFileError(f"{_FILE_NAME} is not a regular file")
    check_record_framing(path, limits)
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests: list[dict[str, np.ndarray]] = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path))):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if not log.HasField("predict_log") or not log.predict_log.request.inputs:
                raise WarmupFileError(
                    f"{_FILE_NAME}: record {index} is not a predict log with "
                    "inputs (only predict warm-up requests are supported)"
                )
            requests.append(
                {
                    key: tf.make_ndarray(tensor)
                    for key, tensor in log.predict_log.request.inputs.items()
                }
            )
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        if isinstance(exc, WarmupFileError):
            raise
        detail = str(getattr(exc, "message", "") or exc).strip().splitlines()
        raise WarmupFileError(
            f"{_FILE_NAME}: not a TFRecord file of PredictionLog: "
            f"{type(exc).__name__}: {detail[0] if detail else ''}"
        ) from exc
    if not requests:
        raise WarmupFileError(f"{_FILE_NAME} holds no records")
    return requests


def check_record_framing(path: Path, limits: WarmupLimits) -> int:
    """Walk the TFRecord headers of `path` within `limits`; the number of records.

    Only the 12-byte headers are read: each declared length must fit in what is left of the
    file, so TensorFlow's reader (CRC checks included) never allocates more than the file holds.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > limits.max_bytes:
                raise WarmupFileError(
                    f"{_FILE_NAME} is {size} bytes, over the limit of "
                    f"{limits.max_bytes} (--warmup-max-bytes)"
                )
            offset = records = 0
            while offset < size:
                header = file.read(_RECORD_HEADER.size)
                if len(header) < _RECORD_HEADER.size:
                    raise WarmupFileError(
                        f"{_FILE_NAME}: not a TFRecord file of "
                        f"PredictionLog (truncated: record {records} has "
                        "an incomplete header)"
                    )
                length, _ = _RECORD_HEADER.unpack(header)
                end = offset + _RECORD_HEADER.size + length + _RECORD_FOOTER_BYTES
                if end > size:
                    raise WarmupFileError(
                        f"{_FILE_NAME}: not a TFRecord file of "
                        f"PredictionLog (truncated or corrupt: record "
                        f"{records} declares {length} bytes, the file has "
                        f"{size - offset - _RECORD_HEADER.size} left)"
                    )
                records += 1
                if records > limits.max_records:
                    raise WarmupFileError(
                        f"{_FILE_NAME} holds more than {limits.max_records} "
                        "records (--warmup-max-records)"
                    )
                offset = file.seek(end)
    except OSError as exc:
        raise WarmupFileError(f"{_FILE_NAME} cannot be read: {exc.strerror or exc}") from exc
    return records


def build_warmup_record(inputs: dict[str, np.ndarray]) -> bytes:
    """One serialized PredictionLog whose predict request carries `inputs`."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
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
