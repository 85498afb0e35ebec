"""Every hostile request measured against the service, as a regression test on a real server.

Each case names the figure it cost before the limits existed (one request to `python -m app` on
127.0.0.1, this 2-core machine): the test asserts a clear 4xx, a bound on time, and the
documented memory bound (see conftest).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time

import httpx
import numpy as np
from PIL import Image

from tests.hostile.conftest import Measured, Probe
from tests.live_server import LiveServer

V2_HEADER_LENGTH = "Inference-Header-Content-Length"
QUICK_S = 2.0  # a refusal must not take the time the refused work would have


def _v2_binary(inputs: list[dict[str, object]], payload: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + payload, {
        V2_HEADER_LENGTH: str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_100_byte_bytes_request_declaring_50_million_elements(probe: Probe) -> None:
    """Before: 381 MB allocated (np.empty of the declared count) and 1.7 s, then a 400."""
    for count, status, message in (
        (50_000_000, 413, "over the limit of 16777216 elements per tensor"),
        (10_000_000, 400, "ends after 2 of 10000000 elements at most"),
    ):
        body, headers = _v2_binary(
            [
                {
                    "name": "image",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ],
            struct.pack("<I", 4) + b"abcd",
        )
        assert len(body) < 150
        measured = probe.send("POST", "/v2/models/mnist/infer", body, headers=headers)
        probe.assert_client_error_within_bounds(measured)
        assert measured.status == status, measured.describe()
        assert message in measured.response.json()["error"]
        assert measured.peak_bytes < 16 * 2**20, measured.describe()
        assert measured.seconds < QUICK_S, measured.describe()


def test_astronomically_large_shapes_are_4xx_never_500(probe: Probe) -> None:
    """Before: a 2**40 x 2**40 BYTES shape answered 500 (numpy's own error)."""
    cases = [
        ([2**40, 2**40], "BYTES"),
        ([0, 2**80], "FP32"),
        ([2**63], "FP32"),
        ([10**30], "INT64"),
        ([1] * 40, "FP32"),
        ([4, 2**62, 2**62], "UINT8"),
    ]
    for shape, datatype in cases:
        body, headers = _v2_binary(
            [
                {
                    "name": "image",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": 8},
                }
            ],
            b"\0" * 8,
        )
        measured = probe.send("POST", "/v2/models/mnist/infer", body, headers=headers)
        probe.assert_client_error_within_bounds(measured)
        assert measured.status in (400, 413), (shape, datatype, measured.describe())
        json_body = json.dumps(
            {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": [0] * 8}]}
        ).encode()
        measured = probe.send("POST", "/v2/models/mnist/infer", json_body)
        probe.assert_client_error_within_bounds(measured)
        assert measured.status in (400, 413), (shape, datatype, measured.describe())


def test_a_20000x2_png_on_estimate_skew(probe: Probe) -> None:
    """Before: a 133-byte PNG cost +1533 MB and 13.5 s (padded to a 20000-pixel square)."""
    for width, message in (
        (20000, "the longest side may be 10000 pixels"),
        (9000, "at most 250 times the shorter one"),
    ):
        picture = Image.new("L", (width, 2), 255)
        picture.putpixel((width // 2, 0), 0)
        data = _png(picture)
        assert len(data) < 200
        measured = probe.send(
            "POST", "/tasks/estimate-skew", data, headers={"Content-Type": "image/png"}
        )
        probe.assert_client_error_within_bounds(measured)
        assert measured.status == 413, measured.describe()
        assert message in measured.response.json()["error"]
        assert measured.peak_bytes < 16 * 2**20, measured.describe()
        assert measured.seconds < QUICK_S, measured.describe()


def test_a_6000x6000_rgba_png(probe: Probe) -> None:
    """Before: a 150 KB RGBA PNG cost +904 MB and 9 s on /tasks/classify-digit."""
    picture = Image.new("RGBA", (6000, 6000), (255, 255, 255, 255))
    picture.paste((0, 0, 0, 255), (2000, 2000, 4000, 4000))
    data = _png(picture)
    measured = probe.send(
        "POST", "/tasks/classify-digit", data, headers={"Content-Type": "image/png"}
    )
    probe.assert_client_error_within_bounds(measured)
    assert measured.status == 413, measured.describe()
    assert "decoding it takes 144000000 bytes" in measured.response.json()["error"]
    assert measured.peak_bytes < 16 * 2**20 and measured.seconds < QUICK_S, measured.describe()


def test_a_large_photo_within_the_limits_is_read_in_bounded_memory(probe: Probe) -> None:
    """A 4000 x 3000 RGB picture (48 MB decoded) is answered, reduced before conversion."""
    picture = Image.new("RGB", (4000, 3000), (255, 255, 255))
    picture.paste((0, 0, 0), (1800, 1000, 2200, 2000))
    data = _png(picture)
    peaks = []
    for _ in range(3):
        measured = probe.send(
            "POST", "/tasks/classify-digit", data, headers={"Content-Type": "image/png"}
        )
        assert measured.status == 200, measured.describe()
        # Within the decode bound (max_image_decode_bytes, 128 MiB) plus a constant, always;
        # the first decode on each of the pool's threads also grows that thread's arena.
        assert measured.peak_bytes < 128 * 2**20 + 32 * 2**20, measured.describe()
        peaks.append(measured.peak_bytes)
    assert min(peaks) < 4000 * 3000 * 4 + 32 * 2**20, peaks  # the decode itself, reduced after


def test_one_output_named_100000_times(probe: Probe) -> None:
    """Before: a 2.7 MB request got a 19.5 MB answer (53 MB from a 1.4 MB one in the issue)."""
    request = {
        "inputs": [
            {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0.0] * 784}
        ],
        "outputs": [{"name": "probabilities"}] * 100_000,
    }
    body = json.dumps(request).encode()
    measured = probe.send("POST", "/v2/models/mnist/infer", body)
    probe.assert_client_error_within_bounds(measured)
    assert measured.status == 400, measured.describe()
    assert "requested more than once" in measured.response.json()["error"]
    assert len(measured.response.content) < 1000
    unknown = {**request, "outputs": [{"name": f"out{i}"} for i in range(1000)]}
    measured = probe.send("POST", "/v2/models/mnist/infer", json.dumps(unknown).encode())
    assert measured.status == 400 and "unknown output" in measured.response.text


def _liveness_while(server: LiveServer, send: threading.Thread) -> list[float]:
    """Latencies of /v2/health/live polled while `send` runs."""
    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        client.get("/v2/health/live")
        send.start()
        while send.is_alive():
            started = time.perf_counter()
            assert client.get("/v2/health/live").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    send.join()
    return latencies


def test_a_24_mb_tfserving_body_leaves_liveness_answering(
    probe: Probe, hostile_server: LiveServer
) -> None:
    """Before: the loop was blocked for seconds; /v2/health/live waited up to 678 ms here
    (3.7 s in the issue's measurement)."""
    rng = np.random.default_rng(0)
    row = json.dumps(np.round(rng.random((28, 28, 1)), 4).tolist())
    rows = 24 * 2**20 // (len(row) + 1)
    body = ('{"instances": [' + ",".join([row] * rows) + "]}").encode()
    # Parsed in full, then refused: the parse alone, as it would be for any model.
    parse_only = b'{"signature_name": "other", ' + body[1:]
    worst: list[float] = []
    for content, status in ((body, 200), (parse_only, 400)):
        results: list[Measured] = []
        send = threading.Thread(
            target=lambda content=content, results=results: results.append(
                probe.send("POST", "/v1/models/mnist:predict", content)
            )
        )
        latencies = _liveness_while(hostile_server, send)
        assert results and results[0].status == status, results
        assert results[0].within_memory_bound(), results[0].describe()
        assert len(latencies) >= 5
        worst.append(max(latencies))
    # The goal is 100 ms. The 2 cores here are shared with other work, whose scheduling alone
    # can delay one poll by a few hundred ms; a blocked loop delays every run, noise seldom
    # does, so the better of the two runs is held to the goal (with some margin).
    assert min(worst) < 0.3, worst
    assert max(worst) < 1.0, worst


def test_ocr_width_100000_is_refused_on_every_protocol(probe: Probe) -> None:
    """Before: accepted on /v1 and /v2: 8-17 s and up to +403 MB each (v2 binary)."""
    width = 100_000
    strip = np.zeros((1, 28, width, 1), np.float32)
    body, headers = _v2_binary(
        [
            {
                "name": "image",
                "shape": list(strip.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": strip.nbytes},
            }
        ],
        strip.tobytes(),
    )
    v1 = (
        '{"instances": [[' + ",".join(["[" + ",".join(["[0]"] * width) + "]"] * 28) + "]]}"
    ).encode()
    v2_json = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 28, width, 1],
                    "datatype": "FP32",
                    "data": [0] * (28 * width),
                }
            ]
        }
    ).encode()
    for path, content, extra in (
        ("/v2/models/ocr/infer", body, headers),
        ("/v1/models/ocr:predict", v1, {}),
        ("/v2/models/ocr/infer", v2_json, {}),
    ):
        measured = probe.send("POST", path, content, headers=extra)
        probe.assert_client_error_within_bounds(measured)
        assert measured.status == 413, measured.describe()
        assert "at most 2048" in measured.response.json()["error"], measured.describe()
        assert measured.seconds < QUICK_S * 2, measured.describe()
    # The widest strip allowed still works.
    ok = np.zeros((1, 28, 2048, 1), np.float32)
    body, headers = _v2_binary(
        [
            {
                "name": "image",
                "shape": list(ok.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": ok.nbytes},
            }
        ],
        ok.tobytes(),
    )
    assert probe.send("POST", "/v2/models/ocr/infer", body, headers=headers).status == 200


def _rows_computed(client: httpx.Client) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("kerasserve_batch_size_rows_sum") and 'model="mnist"' in line:
            total += float(line.split()[-1])
    return total


def test_disconnecting_clients_do_not_fill_the_queue(
    probe: Probe, hostile_server: LiveServer
) -> None:
    """Before: 300 requests of 128 rows sent and abandoned at once: 5632 rows were computed
    for nobody and the next client got 429."""
    rows = 128
    data = np.zeros((rows, 28, 28, 1), np.float32)
    body, headers = _v2_binary(
        [
            {
                "name": "image",
                "shape": list(data.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": data.nbytes},
            }
        ],
        data.tobytes(),
    )
    raw = (
        f"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"{V2_HEADER_LENGTH}: {headers[V2_HEADER_LENGTH]}\r\n\r\n"
    ).encode() + body
    client = probe.client
    before = _rows_computed(client)
    sent = 300
    for _ in range(sent):
        with socket.create_connection(("127.0.0.1", hostile_server.port)) as connection:
            connection.sendall(raw)
    answer = client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    time.sleep(1.0)
    computed = _rows_computed(client) - before
    # Abandoned work is dropped once the server sees the disconnect; what was already running
    # (a few batches) finishes. Far from all 300 requests' rows.
    assert computed < sent * rows / 4, computed
    assert hostile_server.is_running()


def test_big_hostile_bodies_on_the_sliced_path_get_4xx(probe: Probe) -> None:
    """Bodies over `inline_parse_bytes` are parsed in a thread, in slices: junk there too."""
    numbers = "[" + ",".join(["0.5"] * 400_000) + "]"  # 1.6 MB of numbers
    ragged = "[" + ",".join(["[0.5, 0.5]"] * 200_000 + ["[0.5]"]) + "]"
    tiny_values = "[" + ",".join(["{}"] * 1_100_000) + "]"
    cases = [
        ("/v1/models/mnist:predict", f'{{"signature_name": {numbers}, "instances": [[1]]}}'),
        ("/v1/models/mnist:predict", f'{{"instances": {ragged}}}'),
        ("/v1/models/mnist:predict", f'{{"instances": {tiny_values}}}'),
        ("/v1/models/mnist:predict", f'{{"instances": [{{"b64": {numbers}}}]}}'),
        ("/v1/models/mnist:predict", f'{{"inputs": {{"image": {numbers}, "other": 1}}}}'),
        ("/v1/models/ocr:predict", '{"instances": ' + "[" * 60 + numbers + "]" * 60 + "}"),
        ("/v2/models/mnist/infer", f'{{"id": {numbers}, "inputs": []}}'),
        (
            "/v2/models/mnist/infer",
            f'{{"inputs": [{{"name": "image", "shape": {numbers}, '
            '"datatype": "FP32", "data": [1]}]}',
        ),
        (
            "/v2/models/mnist/infer",
            '{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], '
            f'"datatype": "FP32", "data": {numbers}}}]}}',
        ),
        (
            "/v2/models/mnist/infer",
            '{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], '
            f'"datatype": "BYTES", "data": {numbers}}}]}}',
        ),
        (
            "/v2/models/mnist/infer",
            '{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], '
            f'"datatype": "FP32", "data": {ragged}}}]}}',
        ),
    ]
    for path, text in cases:
        body = text.encode()
        assert len(body) > 2**20
        measured = probe.send("POST", path, body)
        probe.assert_client_error_within_bounds(measured)
        assert 400 <= measured.status < 500, (path, text[:80], measured.describe())
