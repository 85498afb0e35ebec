"""Tokens, cross-site refusals and CORS over HTTP, in-process (httpx.ASGITransport).

The app serves an empty repository: what is checked is who gets through to a route, not what
the route answers, so "through" means any status other than the guard's 401/403.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from app.security import Access
from app.security.http import classify
from tests.security.conftest import (
    ADMIN_HEADERS,
    ADMIN_TOKEN,
    API_HEADERS,
    API_TOKEN,
)

pytestmark = pytest.mark.anyio

TOKENS = {"api_tokens": [API_TOKEN], "admin_tokens": [ADMIN_TOKEN]}
OPEN_ROUTES = [
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
    ("GET", "/web/app.js"),
]
API_ROUTES = [
    ("GET", "/v2"),
    ("GET", "/v2/models/mnist"),
    ("GET", "/v2/models/mnist/ready"),
    ("POST", "/v2/models/mnist/infer"),
    ("POST", "/v2/models/mnist/versions/1/infer"),
    ("GET", "/v1/models/mnist"),
    ("GET", "/v1/models/mnist/metadata"),
    ("POST", "/v1/models/mnist:predict"),
    ("POST", "/tasks/classify-digit"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
    ("GET", "/v2/healthz"),
]
ADMIN_ROUTES = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/mnist/load"),
    ("POST", "/v2/repository/models/mnist/unload"),
    ("GET", "/v2/repository/config"),
]


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def test_every_route_of_the_app_has_the_access_level_it_should(empty_repository: Any) -> None:
    """New routes are classified by prefix: admin under /v2/repository, open only by name."""
    from starlette.routing import Mount

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(model_repository=empty_repository, device="cpu"))
    # Routes in the OpenAPI document, and the plain ones outside it (page, static mount, the
    # hoisted inference routes).
    templates = set(app.openapi()["paths"])
    templates |= {
        route.path + ("/file.js" if isinstance(route, Mount) else "")
        for route in app.routes
        if isinstance(getattr(route, "path", None), str)
    }
    assert len(templates) > 20
    seen = set()
    for template in sorted(templates):
        path = template.replace("{", "").replace("}", "")  # /v2/models/model_name/...
        expected = (
            Access.ADMIN
            if path.startswith("/v2/repository/")
            else Access.OPEN
            if path
            in {
                "/",
                "/docs",
                "/redoc",
                "/openapi.json",
                "/docs/oauth2-redirect",
                "/v2/health/live",
                "/v2/health/ready",
            }
            or path.startswith("/web/")
            else Access.API
        )
        assert classify(path) is expected, path
        seen.add(expected)
    assert seen == {Access.OPEN, Access.API, Access.ADMIN}
    for method, path in API_ROUTES:
        assert classify(path) is Access.API, (method, path)


async def test_open_routes_need_no_token(make_client: Any) -> None:
    async with make_client(**TOKENS) as client:
        for method, path in OPEN_ROUTES:
            response = await client.request(method, path)
            assert response.status_code not in (401, 403), (path, response.text)


async def test_api_routes_answer_401_without_a_valid_token(make_client: Any) -> None:
    async with make_client(**TOKENS) as client:
        for method, path in API_ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {API_TOKEN}"},
            ):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.headers["content-type"] == "application/json"
                assert set(response.json()) == {"error"}
            for headers in (API_HEADERS, ADMIN_HEADERS):
                response = await client.request(method, path, headers=headers)
                assert response.status_code not in (401, 403), (path, response.text)


async def test_an_unknown_path_says_no_more_than_before(make_client: Any) -> None:
    async with make_client(**TOKENS) as client:
        anonymous = await client.get("/v2/no-such-thing")
        assert anonymous.status_code == 401
        known = await client.get("/v2/no-such-thing", headers=API_HEADERS)
        assert known.status_code == 404 and known.json() == {"error": "Not Found"}


async def test_without_api_tokens_the_api_stays_open(make_client: Any) -> None:
    async with make_client(admin_tokens=[ADMIN_TOKEN]) as client:
        for method, path in API_ROUTES:
            response = await client.request(method, path)
            assert response.status_code not in (401, 403), (path, response.text)


async def test_admin_routes_are_closed_until_an_admin_token_is_configured(make_client: Any) -> None:
    async with make_client(api_tokens=[API_TOKEN]) as client:
        for method, path in ADMIN_ROUTES:
            for headers in ({}, API_HEADERS, ADMIN_HEADERS):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 403, (path, response.text)
                message = response.json()["error"]
                assert "--admin-token" in message and "KERASSERVE_ADMIN_TOKENS" in message


async def test_admin_routes_need_the_admin_token(make_client: Any) -> None:
    async with make_client(**TOKENS) as client:
        for method, path in ADMIN_ROUTES:
            missing = await client.request(method, path)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            api = await client.request(method, path, headers=API_HEADERS)
            assert api.status_code == 403 and "admin token" in api.json()["error"]
        index = await client.post("/v2/repository/index", headers=ADMIN_HEADERS)
        assert index.status_code == 200 and index.json() == []
        config = await client.get("/v2/repository/config", headers=ADMIN_HEADERS)
        assert config.status_code == 200 and "models" in config.json()
        unknown = await client.post("/v2/repository/models/nothing/unload", headers=ADMIN_HEADERS)
        assert unknown.status_code == 404


async def test_tokens_never_reach_logs_bodies_or_metrics(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guesses = ["guess-0123456789", f"{API_TOKEN}-suffix", ADMIN_TOKEN[:-1]]
    caplog.set_level(logging.DEBUG)
    answers: list[httpx.Response] = []
    async with make_client(log_level="debug", **TOKENS) as client:
        for method, path in [*API_ROUTES, *ADMIN_ROUTES]:
            for token in [API_TOKEN, ADMIN_TOKEN, *guesses]:
                answers.append(
                    await client.request(method, path, headers={"Authorization": f"Bearer {token}"})
                )
        metrics = await client.get("/metrics", headers=API_HEADERS)
    assert metrics.status_code == 200
    assert {answer.status_code for answer in answers} >= {401, 403, 200, 404}
    texts = [caplog.text, metrics.text] + [answer.text + str(answer.headers) for answer in answers]
    for secret in [API_TOKEN, ADMIN_TOKEN, *guesses]:
        assert not any(secret in text for text in texts), secret


async def test_cors_is_off_by_default(make_client: Any) -> None:
    async with make_client() as client:
        preflight = await client.options(
            "/v2/models/mnist/infer",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code != 204
        answer = await client.get("/v2", headers={"Origin": "https://app.example"})
        assert answer.status_code == 200
        for response in (preflight, answer):
            assert not [h for h in response.headers if h.startswith("access-control-")]


async def test_cors_answers_allowed_origins_only(make_client: Any) -> None:
    allowed, other = "https://app.example", "https://other.example"
    async with make_client(cors_origins=[allowed], **TOKENS) as client:
        preflight = await client.options(
            "/v2/models/mnist/infer",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == allowed
        allow_headers = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allow_headers and "content-type" in allow_headers
        assert "POST" in preflight.headers["access-control-allow-methods"]

        refused = await client.options(
            "/v2/models/mnist/infer",
            headers={"Origin": other, "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 401
        assert "access-control-allow-origin" not in refused.headers

        answered = await client.get("/v2", headers={"Origin": allowed, **API_HEADERS})
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in answered.headers["access-control-expose-headers"].lower()
        unauthenticated = await client.get("/v2", headers={"Origin": allowed})
        assert unauthenticated.status_code == 401  # and the page's script may read why
        assert unauthenticated.headers["access-control-allow-origin"] == allowed
        foreign = await client.get("/v2", headers={"Origin": other, **API_HEADERS})
        assert foreign.status_code == 200
        assert "access-control-allow-origin" not in foreign.headers


async def test_admin_routes_refuse_what_a_foreign_page_could_send(make_client: Any) -> None:
    allowed = "https://admin.example"
    unload = "/v2/repository/models/nothing/unload"  # 404 once a request gets through
    async with make_client(cors_origins=[allowed], **TOKENS) as client:

        def post(**headers: str) -> Any:
            return client.post(unload, headers={**ADMIN_HEADERS, **headers}, content=b"{}")

        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://testserver.evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            refused = await post(**headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "cross-site" in refused.json()["error"]
        for content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data; b=x",
            "text/plain",
            "text/plain;charset=UTF-8",
            "",
        ):
            refused = await post(**{"Content-Type": content_type})
            assert refused.status_code == 415, (content_type, refused.text)
        for headers in (
            {},
            {"Content-Type": "application/json"},
            {"Content-Type": "application/json; charset=utf-8"},
            {"Origin": "http://testserver", "Content-Type": "application/json"},
            {"Origin": allowed, "Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-origin"},
        ):
            through = await post(**headers)
            assert through.status_code == 404, (headers, through.text)
        config = await client.get(
            "/v2/repository/config", headers={**ADMIN_HEADERS, "Origin": "https://evil.example"}
        )
        assert config.status_code == 403


async def test_the_openapi_document_says_which_routes_need_a_token(make_client: Any) -> None:
    async with make_client(**TOKENS) as client:
        document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    needs = {
        (method.upper(), path): operation["security"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert needs[("GET", "/v2/health/live")] == []
    assert needs[("POST", "/v2/models/{model_name}/infer")] == [{"bearer": []}]
    assert needs[("POST", "/v2/repository/models/{name}/unload")] == [{"bearer": []}]
    assert needs[("GET", "/metrics")] == [{"bearer": []}]
