"""The edge's error answers come from the error table, on Starlette and FastAPI apps alike."""

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from cellwork import errors
from cellwork.gateway import ErrorBody, error_responses, install_error_handlers


async def raise_named(request: Request) -> Response:
    cls = getattr(errors, request.path_params["name"])
    retry_after = request.query_params.get("retry_after")
    raise cls(f"raised {cls.__name__}", retry_after=float(retry_after) if retry_after else None)


async def crash(request: Request) -> Response:
    raise RuntimeError("secret internals")


async def only_get(request: Request) -> Response:
    return Response(b"ok")


async def teapot(request: Request) -> Response:
    raise HTTPException(418, "short and stout")


def starlette_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/raise/{name}", raise_named),
            Route("/crash", crash),
            Route("/only-get", only_get, methods=["GET"]),
            Route("/teapot", teapot),
        ]
    )
    install_error_handlers(app)
    return app


def client(app: Starlette) -> httpx.AsyncClient:
    # raise_app_exceptions (the default): an exception that escaped the app would fail
    # the test here, as the server would have seen (and logged) it.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


@pytest.mark.parametrize("cls", errors.PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
async def test_every_class_of_the_table_answers_its_status_and_public_code(cls) -> None:
    async with client(starlette_app()) as http:
        r = await http.get(f"/raise/{cls.__name__}")
    assert r.status_code == cls.http_status
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": cls.error_code, "message": f"raised {cls.__name__}"}}


@pytest.mark.parametrize(
    ("name", "retry_after", "header"),
    [("ResourceExhausted", "0.2", "1"), ("Overloaded", "2.1", "3"), ("Unavailable", "5", "5")],
)
async def test_an_error_with_retry_after_answers_it_in_whole_seconds_rounded_up(
    name, retry_after, header
) -> None:
    async with client(starlette_app()) as http:
        r = await http.get(f"/raise/{name}", params={"retry_after": retry_after})
    assert r.headers["retry-after"] == header


async def test_rate_limited_is_429_and_overloaded_is_503_both_with_retry_after() -> None:
    async with client(starlette_app()) as http:
        limited = await http.get("/raise/ResourceExhausted", params={"retry_after": "1"})
        shed = await http.get("/raise/Overloaded", params={"retry_after": "1"})
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert (shed.status_code, shed.json()["error"]["code"]) == (503, "overloaded")
    assert limited.headers["retry-after"] == shed.headers["retry-after"] == "1"


async def test_an_error_without_retry_after_sends_no_retry_after_header() -> None:
    async with client(starlette_app()) as http:
        r = await http.get("/raise/Overloaded")
    assert "retry-after" not in r.headers


async def test_a_401_asks_for_a_bearer_token() -> None:
    async with client(starlette_app()) as http:
        r = await http.get("/raise/Unauthenticated")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


async def test_an_unknown_route_is_404_not_found() -> None:
    async with client(starlette_app()) as http:
        r = await http.get("/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_a_method_not_allowed_is_405_and_keeps_its_allow_header() -> None:
    async with client(starlette_app()) as http:
        r = await http.post("/only-get")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


async def test_an_http_status_the_table_lacks_answers_its_familys_class() -> None:
    async with client(starlette_app()) as http:
        r = await http.get("/teapot")
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "invalid_argument", "message": "short and stout"}}


async def test_an_unexpected_error_is_500_internal_logged_once_and_never_leaks() -> None:
    with capture_logs() as logs:
        async with client(starlette_app()) as http:
            r = await http.get("/crash", headers={"x-request-id": "ignored-without-context"})
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
    events = [e for e in logs if e["event"] == "http.unhandled_error"]
    assert len(events) == 1
    assert events[0]["path"] == "/crash" and events[0]["method"] == "GET"
    assert "secret internals" not in r.text


JSON = "application/json"


class Signup(BaseModel):
    email: str
    age: int


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/signup", responses=error_responses(errors.MalformedJson, errors.ValidationFailed))
    async def signup(body: Signup) -> dict[str, str]:
        return {"email": body.email}

    @app.get("/page")
    async def page(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(403, "not yours")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    install_error_handlers(app)
    return app


async def test_fastapi_a_body_that_is_not_json_is_400_malformed_json() -> None:
    async with client(fastapi_app()) as http:
        r = await http.post(
            "/signup", content=b'{"email": "a@b.c", "age":', headers={"content-type": JSON}
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("method", "path", "body", "named"),
    [
        ("POST", "/signup", {"email": "a@b.c", "age": "old"}, "age: "),
        ("POST", "/signup", {"age": 3}, "email: "),
        ("GET", "/page?limit=0", None, "query.limit: "),
    ],
)
async def test_fastapi_an_invalid_field_is_422_validation_failed_naming_it(
    method, path, body, named
) -> None:
    async with client(fastapi_app()) as http:
        r = await http.request(method, path, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_failed"
    assert r.json()["error"]["message"].startswith(named)


async def test_fastapi_http_exceptions_and_crashes_answer_from_the_table() -> None:
    async with client(fastapi_app()) as http:
        forbidden = await http.get("/forbidden")
        crashed = await http.get("/crash")
        unknown = await http.get("/nowhere")
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "permission_denied")
    assert (crashed.status_code, crashed.json()["error"]["code"]) == (500, "internal")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


def test_error_responses_describe_each_status_with_the_codes_of_the_classes_given() -> None:
    responses = error_responses(
        errors.Overloaded,
        errors.Unauthenticated,
        errors.NoEndpoints,
        errors.Unavailable,
        errors.ValidationFailed,
        errors.MalformedJson,
        errors.InvalidArgument,
        errors.ResourceExhausted,
    )
    assert list(responses) == [400, 401, 422, 429, 503]
    assert {status: entry["description"] for status, entry in responses.items()} == {
        400: "`invalid_argument`, `malformed_json`",
        401: "`unauthenticated`",
        422: "`validation_failed`",
        429: "`rate_limited`",
        503: "`unavailable`, `overloaded`",
    }
    assert all(entry["model"] is ErrorBody for entry in responses.values())


def test_error_responses_become_the_routes_openapi_error_statuses() -> None:
    doc = fastapi_app().openapi()
    answers = doc["paths"]["/signup"]["post"]["responses"]
    assert answers["400"]["description"] == "`malformed_json`"
    assert answers["422"]["description"] == "`validation_failed`"
    schema = answers["422"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ErrorBody"}


async def test_installing_the_handlers_after_the_app_has_served_is_refused() -> None:
    app = Starlette(routes=[Route("/only-get", only_get)])
    async with client(app) as http:
        await http.get("/only-get")
    with pytest.raises(RuntimeError, match="before the app serves"):
        install_error_handlers(app)
