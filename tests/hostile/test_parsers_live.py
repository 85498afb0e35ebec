"""Property-based hostile requests against the real server: every parser, only 4xx (or 200).

Hypothesis builds requests for each wire format the service reads (TF Serving JSON, v2 JSON,
v2 binary with BYTES, picture uploads), from plausible to absurd: huge and negative shapes,
wrong datatypes, nested junk, binary sizes that lie, PNG headers with extreme sizes, flipped
bytes. Each one goes to the one server of the session; the answer must be 200 or a 4xx with an
`{"error": ...}` body, the server must stay up, and its peak memory must stay within the
documented bound (conftest). Bounded: a few dozen examples per format, no deadline.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.hostile.conftest import Probe
from tests.pictures import png_claiming

V2_HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]
LIVE = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)
dimensions = st.one_of(
    st.integers(0, 4),
    st.sampled_from([28, 784, 2048, 2049, 100_000]),
    st.integers(-3, 2**80),
    st.sampled_from([10**30, 2**63, 2**64]),
)
shapes = st.lists(dimensions, max_size=12) | json_values


def _rectangular(shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    return np.round(rng.random(shape), 3).tolist()


@st.composite
def v2_json_bodies(draw: st.DrawFn) -> bytes:
    """A v2 JSON request: sometimes a valid mnist one (with output selections), else junk."""
    if draw(st.booleans()):
        rows = draw(st.integers(1, 3))
        data: Any = _rectangular((rows * 784,), np.random.default_rng(rows))
        shape: Any = [rows, 28, 28, 1]
        if draw(st.booleans()):
            shape = draw(shapes)
        tensor = {
            "name": draw(st.sampled_from(["image", "images"])),
            "shape": shape,
            "datatype": draw(st.sampled_from(["FP32", "FP64", "INT32", "BYTES"])),
            "data": data,
        }
    else:
        tensor = draw(
            st.fixed_dictionaries(
                {
                    "name": st.text(max_size=5) | json_values,
                    "shape": shapes,
                    "datatype": st.sampled_from(DATATYPES) | json_values,
                    "data": json_values,
                },
                optional={"parameters": json_values},
            )
        )
    request: dict[str, Any] = {
        "inputs": draw(
            st.just([tensor]) | st.lists(st.just(tensor), min_size=0, max_size=3) | json_values
        )
    }
    if draw(st.booleans()):
        names = st.sampled_from(["probabilities", "class_id", "nope"]) | st.text(max_size=4)
        request["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries({"name": names}, optional={"parameters": json_values}),
                max_size=5,
            )
            | json_values
        )
    if draw(st.booleans()):
        request["parameters"] = draw(json_values)
    return json.dumps(request).encode()


@st.composite
def v2_binary_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A v2 binary request whose header may lie about shapes, sizes and the header length."""
    payload = draw(st.binary(max_size=96))
    if draw(st.booleans()):  # BYTES elements with plausible length prefixes
        elements = draw(st.lists(st.binary(max_size=8), max_size=6))
        payload = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    size = draw(st.integers(-1, len(payload) + 4) | st.sampled_from([len(payload)]) | json_values)
    tensor = {
        "name": "image",
        "shape": draw(shapes),
        "datatype": draw(st.sampled_from(DATATYPES)),
        "parameters": {"binary_data_size": size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    length = draw(
        st.sampled_from([str(len(header))])
        | st.integers(-5, 500).map(str)
        | st.text(alphabet="0123456789-+.xe", min_size=1, max_size=4)
    )
    return header + payload, {V2_HEADER_LENGTH: length, "Content-Type": "application/octet-stream"}


@st.composite
def tfserving_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # rectangular numbers, right or wrong shape, rows or columns
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
        value: Any = _rectangular(shape, np.random.default_rng(len(shape)))
        if draw(st.booleans()):
            value = [[[[0.5]] * 28] * 28] * draw(st.integers(1, 2))
    else:
        value = draw(
            json_values
            | st.lists(
                st.fixed_dictionaries(
                    {"image": json_values}, optional={"b64": st.text(max_size=8)}
                ),
                max_size=3,
            )
        )
    key = draw(st.sampled_from(["instances", "inputs", "other"]))
    body: dict[str, Any] = {key: value}
    if draw(st.booleans()):
        body["signature_name"] = draw(st.sampled_from(["serving_default", "x"]) | json_values)
    return json.dumps(body).encode()


@st.composite
def pictures(draw: st.DrawFn) -> bytes:
    """Real small pictures, PNG headers declaring extreme sizes, and corrupted files."""
    kind = draw(st.sampled_from(["real", "header", "corrupt"]))
    if kind == "header":  # a tiny PNG whose header declares up to 2**31-1 per side
        width = draw(st.integers(1, 2**31 - 1))
        height = draw(st.integers(1, 2**31 - 1))
        depth, colour = draw(st.sampled_from([(8, 0), (16, 0), (8, 2), (8, 6), (16, 6), (1, 0)]))
        idat = zlib.compress(b"\0" * draw(st.integers(0, 64)))
        return png_claiming(width, height, depth, colour, idat)
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16", "P", "1", "LA"]))
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    picture = Image.new(mode, (width, height))
    if width > 4 and height > 4:
        picture.paste(
            Image.new(mode, (width // 2, height // 2), 255 if mode != "RGB" else (255, 255, 255)),
            (width // 4, height // 4),
        )
    buffer = io.BytesIO()
    picture.save(
        buffer, format=draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("L", "RGB") else "PNG"
    )
    data = buffer.getvalue()
    if kind == "corrupt":
        flips = draw(
            st.lists(
                st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                min_size=1,
                max_size=8,
            )
        )
        raw = bytearray(data)
        for position, value in flips:
            raw[position] = value
        data = bytes(raw[: draw(st.integers(8, len(raw)))])
    return data


@LIVE
@given(body=v2_json_bodies(), model=st.sampled_from(["mnist", "ocr", "nope"]))
def test_v2_json_requests(probe: Probe, body: bytes, model: str) -> None:
    measured = probe.send("POST", f"/v2/models/{model}/infer", body)
    probe.assert_client_error_within_bounds(measured)


@LIVE
@given(request=v2_binary_bodies(), model=st.sampled_from(["mnist", "ocr"]))
def test_v2_binary_requests(
    probe: Probe, request: tuple[bytes, dict[str, str]], model: str
) -> None:
    body, headers = request
    measured = probe.send("POST", f"/v2/models/{model}/infer", body, headers=headers)
    probe.assert_client_error_within_bounds(measured)


@LIVE
@given(body=tfserving_bodies(), model=st.sampled_from(["mnist", "ocr", "deskew"]))
def test_tfserving_json_requests(probe: Probe, body: bytes, model: str) -> None:
    measured = probe.send("POST", f"/v1/models/{model}:predict", body)
    probe.assert_client_error_within_bounds(measured)


@LIVE
@given(
    data=pictures(),
    task=st.sampled_from(["classify-digit", "read-digits", "estimate-skew"]),
    multipart=st.booleans(),
)
def test_picture_uploads(probe: Probe, data: bytes, task: str, multipart: bool) -> None:
    if multipart:
        measured = probe.send(
            "POST", f"/tasks/{task}", files={"file": ("p.png", data, "image/png")}
        )
        measured.body_bytes = len(data)
    else:
        measured = probe.send("POST", f"/tasks/{task}", data, headers={"Content-Type": "image/png"})
    probe.assert_client_error_within_bounds(measured)
